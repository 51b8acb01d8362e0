//! The console's sessions: a random token in a cookie, kept in memory with an expiry and a
//! CSRF token of its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::header::COOKIE;
use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "herd_session";

/// How long a session lasts from the login: a fixed lifetime, not extended by use, so that a
/// stolen cookie is worth a working day at most.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// The most sessions kept: a new login past it ends the oldest session.
pub const MAX_SESSIONS: usize = 64;

/// Random bytes in a token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// One logged-in operator.
struct Session {
    /// The token every state-changing request carries in `X-CSRF-Token`.
    csrf: String,
    /// Its rank among the logins: the oldest goes first when there are too many.
    rank: u64,
    /// When it ends.
    expires: Instant,
}

/// The sessions open, by token.
pub struct Sessions {
    lifetime: Duration,
    open: Mutex<Open>,
}

/// The sessions open, and the rank of the next.
#[derive(Default)]
struct Open {
    by_token: HashMap<String, Session>,
    logins: u64,
}

/// A session opened by a login.
pub struct Opened {
    /// The session's token, for the cookie.
    pub token: String,
    /// The session's CSRF token.
    pub csrf: String,
}

impl Sessions {
    /// No session yet; each will last `lifetime`.
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            open: Mutex::default(),
        }
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Opens a session, ending the oldest when [`MAX_SESSIONS`] are open.
    pub fn open(&self) -> Result<Opened, getrandom::Error> {
        let opened = Opened {
            token: random_token()?,
            csrf: random_token()?,
        };
        let now = Instant::now();
        let mut open = self.lock();
        open.by_token.retain(|_, session| session.expires > now);
        if open.by_token.len() >= MAX_SESSIONS {
            let oldest = open
                .by_token
                .iter()
                .min_by_key(|(_, session)| session.rank)
                .map(|(token, _)| token.clone());
            if let Some(oldest) = oldest {
                open.by_token.remove(&oldest);
            }
        }
        open.logins += 1;
        let rank = open.logins;
        open.by_token.insert(
            opened.token.clone(),
            Session {
                csrf: opened.csrf.clone(),
                rank,
                expires: now + self.lifetime,
            },
        );
        Ok(opened)
    }

    /// The CSRF token of the session of `token`, if it is open and not expired.
    pub fn csrf(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut open = self.lock();
        match open.by_token.get(token) {
            Some(session) if session.expires > now => Some(session.csrf.clone()),
            Some(_) => {
                open.by_token.remove(token);
                None
            }
            None => None,
        }
    }

    /// Ends the session of `token`.
    pub fn close(&self, token: &str) {
        self.lock().by_token.remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Whether `given` is `expected`, in a time that does not depend on where they differ.
pub fn same_token(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The session token in the request's cookies, if any.
pub fn token_in(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, token)| token)
}

/// The `Set-Cookie` value that gives the browser the session of `token`: sent back only to
/// this console (no JavaScript reads it, no other site's request carries it).
pub fn cookie(token: &str, lifetime: Duration) -> String {
    format!(
        "{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        lifetime.as_secs()
    )
}

/// The `Set-Cookie` value that makes the browser forget the session.
pub fn forget_cookie() -> String {
    format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// A fresh random token, in hex.
fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn a_session_is_found_until_it_is_closed() {
        let sessions = Sessions::new(LIFETIME);
        let opened = sessions.open().unwrap();
        assert_eq!(opened.token.len(), 2 * TOKEN_BYTES);
        assert_ne!(opened.token, opened.csrf);
        assert_eq!(sessions.csrf(&opened.token), Some(opened.csrf));
        assert_eq!(sessions.csrf("nonsense"), None);
        sessions.close(&opened.token);
        assert_eq!(sessions.csrf(&opened.token), None);
    }

    #[test]
    fn an_expired_session_is_not_found() {
        let sessions = Sessions::new(Duration::ZERO);
        let opened = sessions.open().unwrap();
        assert_eq!(sessions.csrf(&opened.token), None);
    }

    #[test]
    fn too_many_sessions_end_the_oldest() {
        let sessions = Sessions::new(LIFETIME);
        let first = sessions.open().unwrap();
        let rest: Vec<Opened> = (0..MAX_SESSIONS)
            .map(|_| sessions.open().unwrap())
            .collect();
        assert_eq!(sessions.lock().by_token.len(), MAX_SESSIONS);
        assert_eq!(sessions.csrf(&first.token), None);
        assert!(rest.iter().all(|s| sessions.csrf(&s.token).is_some()));
    }

    #[test]
    fn the_token_is_read_among_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("theme=dark; herd_session=abc"),
        );
        assert_eq!(token_in(&headers), Some("abc"));
        assert_eq!(token_in(&HeaderMap::new()), None);
    }
}
