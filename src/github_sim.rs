//! A stateful fake GitHub served over HTTP, strict like the real one: the tests' GitHub and
//! the `bg-agent dev github-sim` local simulator. (Being built for issue 3.)
