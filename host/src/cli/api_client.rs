//! A typed client of a node's HTTP API: where the node is, which token to send (flag,
//! environment, `hatchery dev`'s file or the user's), and the API's errors as `ClientError`.
//!
//! It only speaks HTTP (plain `http://` for now) and never touches the database; requests and
//! answers are the API's own types (`api::types`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::types::{Deployed, RunAccepted, RunBody, RunDetail};

use super::args::{AdminArgs, ClientArgs};

/// Default address of the API.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The directory `hatchery dev` keeps its state in, under the current directory.
pub const DEV_DIR: &str = ".hatchery";

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message} ({status}, {code})")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The API's machine code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// The server could not be reached or the exchange failed.
    #[error(
        "cannot reach the Hatchery API at {url}: {cause} (is a node running? set HATCHERY_URL or --url)"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The innermost cause (e.g. `Connection refused`), said once.
        cause: String,
    },
    /// The server answered JSON of another shape than the API's type for it.
    #[error("unexpected answer from {url}: {message}")]
    Shape {
        /// The URL asked.
        url: String,
        /// What did not fit.
        message: String,
    },
    /// The server answered something that is not the API's JSON.
    #[error("unexpected answer from {url} ({status}): {body}")]
    Unexpected {
        /// The URL asked.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
}

/// A bearer token and where it came from (for messages).
#[derive(Debug, Clone)]
struct Credential {
    token: String,
    source: String,
}

/// An HTTP client of one node's API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    credential: Option<Credential>,
}

/// The body of a request.
pub(crate) enum Body {
    None,
    Json(Value),
    Wasm(Vec<u8>),
}

impl Client {
    /// A client of the API at `url` with `token` (if any).
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("hatchery-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        let base = url.trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            bail!(
                "{base}: this build of the CLI speaks plain http:// only (TLS is not built in yet)"
            );
        }
        if !base.starts_with("http://") {
            bail!("{base}: the API URL must start with http://");
        }
        Ok(Self {
            http,
            base,
            credential: token.map(|token| Credential {
                token,
                source: "the given token".into(),
            }),
        })
    }

    /// A client for a tenant's commands: the URL and token from flags, the environment or the
    /// files `hatchery dev` writes.
    pub(crate) fn tenant(args: &ClientArgs) -> anyhow::Result<Self> {
        let mut client = Self::new(&resolve_url(args.url.as_deref()), None)?;
        client.credential = match args.token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => Some(Credential {
                token: token.trim().to_owned(),
                source: "HATCHERY_TOKEN/--token".into(),
            }),
            None => token_from_files()?,
        };
        if client.credential.is_none() {
            bail!(
                "no token: set HATCHERY_TOKEN or pass --token (or run `hatchery dev`, which writes {DEV_DIR}/token)"
            );
        }
        Ok(client)
    }

    /// A client for the admin's commands.
    pub(crate) fn admin(args: &AdminArgs) -> anyhow::Result<Self> {
        let dev_file = Path::new(DEV_DIR).join("admin-token");
        let token = match args.admin_token.clone().filter(|t| !t.is_empty()) {
            Some(token) => token,
            None => match std::fs::read_to_string(&dev_file) {
                Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
                _ => bail!("no admin token: set HATCHERY_ADMIN_TOKEN or pass --admin-token"),
            },
        };
        let mut client = Self::new(&resolve_url(args.url.as_deref()), None)?;
        client.credential = Some(Credential {
            token,
            source: "HATCHERY_ADMIN_TOKEN/--admin-token".into(),
        });
        Ok(client)
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(credential) = &self.credential {
            request = request.bearer_auth(&credential.token);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Wasm(bytes) => request
                .header(reqwest::header::CONTENT_TYPE, "application/wasm")
                .body(bytes),
        };
        let unreachable = |error: reqwest::Error| ClientError::Unreachable {
            url: url.clone(),
            cause: root_cause(&error),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success()
            && let Some(value) = parsed
        {
            return Ok(value);
        }
        if let Some(error) = parsed.as_ref().and_then(|v| v.get("error")) {
            let text = |key: &str| {
                error
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let mut message = text("message");
            if status == StatusCode::UNAUTHORIZED
                && let Some(credential) = &self.credential
            {
                message.push_str(&format!(" (token from {})", credential.source));
            }
            return Err(ClientError::Api {
                status,
                code: text("code"),
                message,
            });
        }
        let body = String::from_utf8_lossy(&bytes);
        Err(ClientError::Unexpected {
            url,
            status,
            body: body.chars().take(200).collect(),
        })
    }

    /// `POST /api/v1/modules`.
    pub async fn deploy(&self, wasm: Vec<u8>) -> Result<Deployed, ClientError> {
        self.call_as(Method::POST, "/api/v1/modules", Body::Wasm(wasm))
            .await
    }

    /// `method path` with `body` serialized as JSON, read as `T`.
    pub(crate) async fn send_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_value(body).unwrap_or_default();
        self.call_as(method, path, Body::Json(body)).await
    }

    /// `method path` with `body`, read as the API's type `T`.
    pub(crate) async fn call_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<T, ClientError> {
        let value = self.call(method, path, body).await?;
        serde_json::from_value(value).map_err(|e| ClientError::Shape {
            url: format!("{}{path}", self.base),
            message: e.to_string(),
        })
    }

    /// `POST /api/v1/workflows/{name}/runs`.
    pub async fn start_run(
        &self,
        workflow: &str,
        body: &RunBody,
    ) -> Result<RunAccepted, ClientError> {
        let path = format!("/api/v1/workflows/{}/runs", encode(workflow));
        let body = serde_json::to_value(body).unwrap_or_default();
        self.call_as(Method::POST, &path, Body::Json(body)).await
    }

    /// `GET /api/v1/runs/{id}`.
    pub async fn run(&self, id: &str) -> Result<RunDetail, ClientError> {
        let path = format!("/api/v1/runs/{}", encode(id));
        self.call_as(Method::GET, &path, Body::None).await
    }

    /// `POST /api/v1/runs/{id}/{action}` (`cancel`, `replay`, `reschedule`).
    pub(crate) async fn run_action<T: DeserializeOwned>(
        &self,
        id: &str,
        action: &str,
        body: Body,
    ) -> Result<T, ClientError> {
        let path = format!("/api/v1/runs/{}/{action}", encode(id));
        self.call_as(Method::POST, &path, body).await
    }

    /// `PUT path` with `body` as JSON, read as `T`.
    pub(crate) async fn put_as<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        self.send_as(Method::PUT, path, body).await
    }

    /// `GET path?query` read as `T`.
    pub(crate) async fn get_as<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<T, ClientError> {
        let value = self.get(path, query).await?;
        serde_json::from_value(value).map_err(|e| ClientError::Shape {
            url: format!("{}{path}", self.base),
            message: e.to_string(),
        })
    }

    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<Value, ClientError> {
        let query: Vec<String> = query
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
            .collect();
        let path = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", query.join("&"))
        };
        self.call(Method::GET, &path, Body::None).await
    }

    pub(crate) async fn put(&self, path: &str, body: Body) -> Result<Value, ClientError> {
        self.call(Method::PUT, path, body).await
    }
}

/// The innermost error of `error`'s chain: what actually failed, without the layers that
/// each repeat it.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// Percent-encodes one path segment or query value.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The API URL: the flag or `HATCHERY_URL`, else the one `hatchery dev` wrote, else the
/// default.
fn resolve_url(given: Option<&str>) -> String {
    if let Some(url) = given.map(str::trim).filter(|u| !u.is_empty()) {
        return url.to_owned();
    }
    std::fs::read_to_string(Path::new(DEV_DIR).join("url"))
        .ok()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// The user-wide token file: `$XDG_CONFIG_HOME/hatchery/token` or `~/.config/hatchery/token`.
pub fn user_token_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("hatchery").join("token"))
}

/// The token in `.hatchery/token` (of the current directory), else in the user's config.
fn token_from_files() -> anyhow::Result<Option<Credential>> {
    let candidates = std::iter::once(Path::new(DEV_DIR).join("token")).chain(user_token_path());
    for path in candidates {
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                return Ok(Some(Credential {
                    token: text.trim().to_owned(),
                    source: path.display().to_string(),
                }));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_escapes_everything_but_unreserved() {
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode("a b/c:d"), "a%20b%2Fc%3Ad");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
