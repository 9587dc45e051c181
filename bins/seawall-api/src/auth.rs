//! The admin bearer token: configured, or generated at start; compared in
//! constant time. The middleware takes the token and the rate limiters as
//! its state, so this module knows nothing of the service's shared state.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::problem::Problem;
use crate::problem::ratelimit::{too_many, unknown_client};
use crate::ratelimit::RateLimits;

/// The token admin routes require.
#[derive(Clone)]
pub(crate) struct AdminToken {
    token: String,
    /// SHA-256 of the token: requests are compared digest to digest, so the
    /// comparison takes the same time whatever the length or content of the
    /// guess.
    digest: [u8; 32],
    generated: bool,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("token", &"***")
            .field("generated", &self.generated)
            .finish()
    }
}

impl AdminToken {
    /// The configured token, or a fresh random one.
    pub(crate) fn new(configured: Option<&str>) -> Result<Self, getrandom::Error> {
        match configured {
            Some(token) => Ok(Self::from_token(token.to_owned(), false)),
            None => {
                let mut bytes = [0_u8; 24];
                getrandom::fill(&mut bytes)?;
                let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
                Ok(Self::from_token(format!("sw_{token}"), true))
            }
        }
    }

    fn from_token(token: String, generated: bool) -> Self {
        let digest = Sha256::digest(token.as_bytes()).into();
        Self {
            token,
            digest,
            generated,
        }
    }

    /// The token itself.
    pub(crate) fn as_str(&self) -> &str {
        &self.token
    }

    /// Whether it was generated at start rather than configured.
    pub(crate) fn is_generated(&self) -> bool {
        self.generated
    }

    /// Whether `candidate` is the token, in time independent of both.
    pub(crate) fn matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// What the admin routes check: the token, and the auth rate limiter that
/// counts failed attempts per client address.
#[derive(Clone)]
pub(crate) struct AdminGuard {
    token: AdminToken,
    limits: Option<RateLimits>,
}

impl AdminGuard {
    pub(crate) fn new(token: AdminToken, limits: Option<RateLimits>) -> Self {
        Self { token, limits }
    }
}

/// What a request's credentials amount to.
enum Verdict {
    /// The admin token.
    Admitted,
    /// No `Authorization` header: not an attempt.
    Missing,
    /// A malformed header or a wrong token: a failed attempt.
    Failed(Problem),
}

fn verify(token: &AdminToken, headers: &axum::http::HeaderMap) -> Verdict {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Verdict::Missing;
    };
    let credentials = value.to_str().ok().and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    match credentials {
        None | Some("") => Verdict::Failed(Problem::unauthorized(
            "the Authorization header must be `Bearer <admin token>`",
        )),
        Some(candidate) if token.matches(candidate) => Verdict::Admitted,
        Some(_) => Verdict::Failed(Problem::new(
            StatusCode::FORBIDDEN,
            "the admin token is not valid",
        )),
    }
}

/// Middleware for admin routes: 401 without a bearer token, 403 with a wrong
/// one, and no answer about the token past the auth limit.
///
/// An attempt (a request with an `Authorization` header) is taken from the
/// auth limiter by client address before its verdict is answered: a wrong
/// or malformed token consumes one unit, and one that finds the limit used
/// up is answered 429 whatever it sent, so a concurrent burst learns at most
/// the limit's number of verdicts. A correct token is checked against the
/// limit without consuming (a refund of its unit, taken atomically): the
/// admin's own requests, a dashboard's bursts included, never use up the
/// limit, yet the right token gets 429 where a wrong one would, and so
/// tells a guesser nothing. An address past the limit is blocked for the
/// profile's block time. The token's digest is compared in process, in
/// constant time, before the limiter is asked, since which of the two the
/// attempt takes depends on it; nothing of it is answered before.
pub(crate) async fn require_admin(
    State(guard): State<AdminGuard>,
    request: Request,
    next: Next,
) -> Response {
    let verdict = verify(&guard.token, request.headers());
    let auth = match guard.limits.as_ref() {
        None => None,
        Some(limits) => match limits.client_ip(&request) {
            Some(client) => Some((limits.auth().0, client)),
            // No attempt goes uncounted: without an address to count it by,
            // nothing is answered.
            None => return unknown_client(),
        },
    };
    if let Some((limiter, client)) = &auth {
        let standing = match verdict {
            Verdict::Failed(_) => limiter.check(client, 1).await,
            Verdict::Admitted | Verdict::Missing => limiter.peek(client).await,
        };
        match standing {
            // Without credentials there is no verdict to keep: only a block
            // refuses.
            Ok(decision)
                if decision.blocked_for.is_some()
                    || (!decision.allowed && !matches!(verdict, Verdict::Missing)) =>
            {
                return too_many(&decision, "this client address");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "the auth limiter failed"),
        }
    }
    match verdict {
        Verdict::Admitted => next.run(request).await,
        Verdict::Missing => {
            Problem::unauthorized("this route needs `Authorization: Bearer <admin token>`")
                .into_response()
        }
        Verdict::Failed(problem) => problem.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_random_and_long() {
        let a = AdminToken::new(None).expect("accepted");
        let b = AdminToken::new(None).expect("accepted");
        assert!(a.is_generated());
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), 3 + 48);
        assert!(a.matches(a.as_str()));
        assert!(!a.matches(b.as_str()));
    }

    #[test]
    fn configured_token_matches_only_itself() {
        let token = AdminToken::new(Some("correct horse battery staple")).expect("accepted");
        assert!(!token.is_generated());
        assert!(token.matches("correct horse battery staple"));
        assert!(!token.matches("correct horse battery stapl"));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains("horse"));
    }
}
