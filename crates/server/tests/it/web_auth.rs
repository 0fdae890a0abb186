//! Sign-in with GitHub and who sees what, over HTTP: the real server, the fake GitHub's
//! OAuth endpoints and user tokens, a client that keeps cookies the way a browser does
//! (by hand here, so each cookie's attributes are checked too).

use std::collections::BTreeMap;

use bg_agent::store::tasks::{CreatedTask, TaskRecord};
use bg_agent_core::task::TaskState;
use bg_agent_testkit::fixtures::agent_task;
use bg_agent_testkit::harness::{Harness, LEAD, LEAD_ID, REPO, Scenario};
use github_fake::world::{DRIVE_BY, GADGETS, GADGETS_ID, INSTALLATION_ID, WIDGETS_ID};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

/// A browser, as far as sign-in needs one: cookies per host, redirects followed by hand.
pub(crate) struct Browser {
    pub(crate) http: reqwest::Client,
    /// host:port → name → value.
    cookies: BTreeMap<String, BTreeMap<String, String>>,
    /// Every `Set-Cookie` received, as sent.
    pub(crate) set_cookies: Vec<String>,
}

pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) url: String,
    pub(crate) body: String,
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default().to_owned()
}

impl Browser {
    pub(crate) fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            set_cookies: Vec::new(),
        }
    }

    pub(crate) fn cookie_header(&self, url: &str) -> Option<String> {
        let jar = self.cookies.get(&host_of(url))?;
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn keep(&mut self, url: &str, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap().to_owned();
            let (pair, attributes) = text.split_once(';').unwrap_or((&text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let jar = self.cookies.entry(host_of(url)).or_default();
            if attributes.contains("Max-Age=0") {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), value.to_owned());
            }
            self.set_cookies.push(text);
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder, url: &str) -> reqwest::Response {
        let request = match self.cookie_header(url) {
            Some(cookies) => request.header(COOKIE, cookies),
            None => request,
        };
        let response = request.send().await.unwrap();
        self.keep(url, &response);
        response
    }

    /// GET, following redirects across hosts (the server, the fake GitHub) as a browser does.
    pub(crate) async fn get(&mut self, url: &str) -> Page {
        let mut url = url.to_owned();
        for _ in 0..10 {
            let response = self.send(self.http.get(&url), &url).await;
            if response.status().is_redirection() {
                let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
                url = if location.starts_with('/') {
                    format!("http://{}{location}", host_of(&url))
                } else {
                    location
                };
                continue;
            }
            return Page {
                status: response.status(),
                url,
                body: response.text().await.unwrap(),
            };
        }
        panic!("too many redirects");
    }

    /// A form post from one of the server's pages (its `Origin`), not following redirects.
    pub(crate) async fn post(
        &mut self,
        url: &str,
        form: &[(&str, &str)],
        origin: &str,
    ) -> reqwest::Response {
        let request = self.http.post(url).form(form).header("origin", origin);
        self.send(request, url).await
    }
}

/// The CSRF token of a page's forms.
pub(crate) fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF field in {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// A queued task in `repository`, asked for by `octo-lead` (in widgets) or someone else
/// (one active task per person).
async fn task_in(h: &Harness, key: &str, repository: &str, repository_id: i64) -> TaskRecord {
    let lead = repository == REPO;
    let creator = if lead {
        LEAD_ID
    } else {
        LEAD_ID + repository_id
    };
    let mut new = agent_task(key, creator, repository_id);
    new.installation_id = INSTALLATION_ID as i64;
    new.repository = repository.to_owned();
    new.creator_login = if lead {
        LEAD.to_owned()
    } else {
        "octo-other".to_owned()
    };
    new.summary = format!("task in {repository}");
    match h.store().create_task(&new).await.unwrap() {
        CreatedTask::Created(task) => task,
        other => panic!("{other:?}"),
    }
}

/// Signs `login` in through the fake GitHub; the list page they land on.
pub(crate) async fn sign_in(h: &Harness, browser: &mut Browser, login: &str) -> Page {
    h.sim.approve_sign_in_as(Some(login));
    let page = browser.get(&format!("{}/", h.public_url())).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.url, format!("{}/", h.public_url()));
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_sees_only_readable_tasks_and_signing_out_ends_the_session() {
    let h = Scenario::intake().sign_in().start().await;
    // drive-by can read widgets only; octo-lead has a task in each repository.
    h.sim.set_permission(GADGETS, DRIVE_BY, None).unwrap();
    let widgets = task_in(&h, "w", REPO, WIDGETS_ID as i64).await;
    let gadgets = task_in(&h, "g", GADGETS, GADGETS_ID as i64).await;
    let base = h.public_url().to_owned();

    // Not signed in: pages send the browser to sign in.
    let mut browser = Browser::new();
    let first = browser
        .http
        .get(format!("{base}/tasks/{}", widgets.id))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        first.headers()[LOCATION],
        format!("/login?next=/tasks/{}", widgets.id).as_str()
    );

    let list = sign_in(&h, &mut browser, DRIVE_BY).await;
    assert!(list.body.contains("task in acme/widgets"), "{}", list.body);
    assert!(!list.body.contains("acme/gadgets"), "{}", list.body);
    assert!(list.body.contains(&format!("@{DRIVE_BY}")), "{}", list.body);
    // The session cookie: signed id only, HttpOnly, SameSite=Lax, not Secure on loopback http.
    let session = browser
        .set_cookies
        .iter()
        .find(|c| c.starts_with("bg_session="))
        .unwrap()
        .clone();
    assert!(session.contains("; HttpOnly"), "{session}");
    assert!(session.contains("; SameSite=Lax"), "{session}");
    assert!(session.contains("; Path=/"), "{session}");
    assert!(session.contains("; Max-Age=28800"), "{session}");
    assert!(!session.contains("Secure"), "{session}");
    let user_token_in_cookies = browser.set_cookies.iter().any(|c| c.contains("ghu_"));
    assert!(!user_token_in_cookies, "{:?}", browser.set_cookies);

    // A task of a repository they cannot read does not exist for them, nor its log.
    let hidden = browser.get(&format!("{base}/tasks/{}", gadgets.id)).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert!(!hidden.body.contains("gadgets"), "{}", hidden.body);
    let stream = browser
        .get(&format!("{base}/tasks/{}/logs/stream", gadgets.id))
        .await;
    assert_eq!(stream.status, StatusCode::NOT_FOUND);
    let missing = browser.get(&format!("{base}/tasks/999999")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // The readable one shows, without Retry/Cancel for a reader, and they cannot post them.
    let page = browser.get(&format!("{base}/tasks/{}", widgets.id)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("id=\"cancel\""), "{}", page.body);
    let csrf = csrf_of(&page.body);
    let refused = browser
        .post(
            &format!("{base}/tasks/{}/cancel", widgets.id),
            &[("csrf", &csrf)],
            &base,
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(h.task(widgets.id).get().await.state, TaskState::Queued);

    // Sign-out needs the CSRF token; then the old cookie opens nothing.
    let old_cookie = browser.cookie_header(&base).unwrap();
    let no_token = browser.post(&format!("{base}/logout"), &[], &base).await;
    assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
    let out = browser
        .post(&format!("{base}/logout"), &[("csrf", &csrf)], &base)
        .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()[LOCATION], "/signed-out");
    let replayed = browser
        .http
        .get(format!("{base}/"))
        .header(COOKIE, old_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER);
    assert_eq!(replayed.headers()[LOCATION], "/login?next=/");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_cancels_and_retries_with_csrf_from_this_site_only() {
    let h = Scenario::intake().sign_in().start().await;
    let task = task_in(&h, "w", REPO, WIDGETS_ID as i64).await;
    let base = h.public_url().to_owned();
    let mut browser = Browser::new();
    sign_in(&h, &mut browser, LEAD).await;
    let page = browser.get(&format!("{base}/tasks/{}", task.id)).await;
    assert!(page.body.contains("id=\"cancel\""), "{}", page.body);
    let csrf = csrf_of(&page.body);
    let cancel = format!("{base}/tasks/{}/cancel", task.id);

    // Without the token, with a wrong one, or from another site: 403, nothing happens.
    for (form, origin) in [
        (vec![], base.as_str()),
        (vec![("csrf", "forged")], base.as_str()),
        (vec![("csrf", csrf.as_str())], "http://evil.example"),
        (vec![("csrf", csrf.as_str())], "null"),
    ] {
        let response = browser.post(&cancel, &form, origin).await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{form:?} from {origin}"
        );
    }
    assert_eq!(h.task(task.id).get().await.state, TaskState::Queued);

    let done = browser.post(&cancel, &[("csrf", &csrf)], &base).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let cancelled = h.task(task.id).get().await;
    assert_eq!(cancelled.state, TaskState::Cancelled);
    let events = h.store().task_events(task.id).await.unwrap();
    assert!(events.iter().any(|e| e.actor == LEAD), "{events:?}");

    // Retry makes attempt 2, linked, once however often it is pressed.
    let retry = format!("{base}/tasks/{}/retry", task.id);
    let first = browser.post(&retry, &[("csrf", &csrf)], &base).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let location = first.headers()[LOCATION].to_str().unwrap().to_owned();
    let again = browser.post(&retry, &[("csrf", &csrf)], &base).await;
    assert_eq!(again.headers()[LOCATION].to_str().unwrap(), location);
    let new_id: i64 = location.trim_start_matches("/tasks/").parse().unwrap();
    let attempt = h.task(new_id).get().await;
    assert_eq!(attempt.attempt, 2);
    assert_eq!(attempt.retry_of, Some(task.id));
    assert_eq!(attempt.creator_login, LEAD);
    let page = browser.get(&format!("{base}{location}")).await;
    assert!(page.body.contains("(attempt 2, retry of"), "{}", page.body);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_whose_state_is_not_this_browsers_is_refused() {
    let h = Scenario::intake().sign_in().start().await;
    let base = h.public_url().to_owned();
    h.sim.approve_sign_in_as(Some(LEAD));

    // /login: off to GitHub with state and an S256 challenge; the state is in a cookie.
    let mut browser = Browser::new();
    let login = browser
        .send(browser.http.get(format!("{base}/login")), &base)
        .await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let authorize = login.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        authorize.starts_with(&format!(
            "{}/login/oauth/authorize?client_id=",
            h.sim.base_url()
        )),
        "{authorize}"
    );
    assert!(
        authorize.contains("&code_challenge_method=S256"),
        "{authorize}"
    );
    assert!(
        authorize.contains(&format!("&redirect_uri={}", base.replace(':', "%3A"))),
        "{authorize}"
    );
    // The fake approves and sends the browser back with a code and the state.
    let back = browser.send(browser.http.get(&authorize), &authorize).await;
    let callback = back.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        callback.starts_with(&format!("{base}/login/callback?code=")),
        "{callback}"
    );

    // Another state: refused, no session.
    let (before, state) = callback.split_once("&state=").unwrap();
    let forged = format!("{before}&state=x{state}");
    let refused = browser.get(&forged).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body.contains("does not belong to this browser"),
        "{}",
        refused.body
    );
    assert!(
        !browser
            .set_cookies
            .iter()
            .any(|c| c.starts_with("bg_session="))
    );

    // The right state but another browser (no sign-in cookie): refused too.
    let mut other = Browser::new();
    let refused = other.get(&callback).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused
            .body
            .contains("expired or was started in another browser"),
        "{}",
        refused.body
    );

    // Nobody signed in to GitHub: the fake's authorize page refuses; no session either.
    h.sim.approve_sign_in_as(None);
    let mut third = Browser::new();
    let page = third.get(&format!("{base}/")).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_tampered_session_cookie_opens_nothing() {
    let h = Scenario::intake().sign_in().start().await;
    let base = h.public_url().to_owned();
    let mut browser = Browser::new();
    sign_in(&h, &mut browser, LEAD).await;
    let cookie = browser.cookies[&host_of(&base)]["bg_session"].clone();
    let (id, tag) = cookie.split_once('.').unwrap();
    let flip = |s: &str| {
        let mut chars: Vec<char> = s.chars().collect();
        chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let forgeries = [
        format!("{}.{tag}", flip(id)),
        format!("{id}.{}", flip(tag)),
        id.to_owned(),
        format!("{id}."),
        // A well-formed value signed with another key.
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            .to_owned(),
    ];
    for forged in forgeries {
        let response = browser
            .http
            .get(format!("{base}/"))
            .header(COOKIE, format!("bg_session={forged}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{forged}");
        assert_eq!(response.headers()[LOCATION], "/login?next=/");
    }
    let genuine = browser
        .http
        .get(format!("{base}/"))
        .header(COOKIE, format!("bg_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(genuine.status(), StatusCode::OK);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_user_token_is_checked_with_github() {
    let h = Scenario::intake().sign_in().start().await;
    h.sim.set_permission(GADGETS, DRIVE_BY, None).unwrap();
    let gadgets = task_in(&h, "g", GADGETS, GADGETS_ID as i64).await;
    let base = h.public_url().to_owned();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |token: String| {
        http.get(format!("{base}/tasks/{}", gadgets.id))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        get(h.sim.user_token(LEAD)).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        get(h.sim.user_token(DRIVE_BY)).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let refused = get("ghu_not_a_token".into()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    h.finish().await;
}

/// The fake's code exchange, as GitHub documents it: client credentials, a code good
/// once, the PKCE verifier; answers in JSON or form encoding as `Accept` asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_a_wrong_pkce_verifier_and_a_wrong_client_secret() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let h = Scenario::intake().sign_in().start().await;
    h.sim.approve_sign_in_as(Some(LEAD));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let web = h.sim.base_url().to_owned();
    let verifier = "a-verifier-of-forty-three-characters-at-least";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let client_id = h.sim.oauth_client_id();
    let code = || async {
        let response = http
            .get(format!("{web}/login/oauth/authorize"))
            .query(&[
                ("client_id", client_id.as_str()),
                ("redirect_uri", "http://127.0.0.1:9/cb"),
                ("state", "s"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
        assert!(location.ends_with("&state=s"), "{location}");
        location
            .split_once("code=")
            .unwrap()
            .1
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    };
    let exchange = |code: String, secret: &'static str, verifier: &'static str, json: bool| {
        let request = http.post(format!("{web}/login/oauth/access_token")).form(&[
            ("client_id", client_id.as_str()),
            ("client_secret", secret),
            ("code", code.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", verifier),
        ]);
        let request = if json {
            request.header("accept", "application/json")
        } else {
            request
        };
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.text().await.unwrap()
        }
    };
    let secret = h.sim.oauth_client_secret();

    let wrong_verifier = exchange(
        code().await,
        secret,
        "another-verifier-entirely-0123456789abcdef",
        true,
    )
    .await;
    let answer: serde_json::Value = serde_json::from_str(&wrong_verifier).unwrap();
    assert_eq!(answer["error"], "bad_verification_code", "{answer}");
    assert!(answer.get("access_token").is_none());

    let wrong_secret = exchange(code().await, "not-the-secret", verifier, true).await;
    let answer: serde_json::Value = serde_json::from_str(&wrong_secret).unwrap();
    assert_eq!(answer["error"], "incorrect_client_credentials", "{answer}");

    // The right verifier: a `ghu_` token (form encoding without `Accept: json`), once.
    let good = code().await;
    let form = exchange(good.clone(), secret, verifier, false).await;
    assert!(form.starts_with("access_token=ghu_"), "{form}");
    assert!(form.contains("&token_type=bearer"), "{form}");
    let reused = exchange(good, secret, verifier, true).await;
    assert!(reused.contains("bad_verification_code"), "{reused}");

    // The token sees the user and what both they and the App can see.
    let token = form
        .split('&')
        .find_map(|p| p.strip_prefix("access_token="))
        .unwrap()
        .to_owned();
    let api = h.sim.api_url().to_owned();
    let user: serde_json::Value = http
        .get(format!("{api}/user"))
        .bearer_auth(&token)
        .header("user-agent", "test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["login"], LEAD);
    h.sim.set_permission(GADGETS, DRIVE_BY, None).unwrap();
    let drive_by = h.sim.user_token(DRIVE_BY);
    let installations: serde_json::Value = http
        .get(format!("{api}/user/installations"))
        .bearer_auth(&drive_by)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(installations["total_count"], 1);
    let repos: serde_json::Value = http
        .get(format!(
            "{api}/user/installations/{INSTALLATION_ID}/repositories"
        ))
        .bearer_auth(&drive_by)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = repos["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [REPO]);
    assert_eq!(repos["repositories"][0]["permissions"]["push"], false);
    let hidden = http
        .get(format!("{api}/repos/{GADGETS}"))
        .bearer_auth(&drive_by)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    h.finish().await;
}
