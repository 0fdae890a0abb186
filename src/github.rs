//! The GitHub App client: App JWTs, installation tokens, the typed calls the app makes,
//! GitHub's limits, retries and rate limits. (Being built for issue 3.)
