//! The outside world as a task sees it: outgoing HTTP through `wasi:http`, allowed only where
//! the tenant's egress policy allows it, and cut at a time and size limit.
//!
//! Every request is checked before anything is sent: the allowlist and the ceiling, then the
//! host is resolved here (not by the connection) and only a checked address is connected to,
//! so a name that resolves to an internal address is refused unless a pattern names that
//! address, and a second lookup cannot answer differently (DNS rebinding). Each request's
//! method, host, status and duration go to the task's log; a refusal is an error the guest
//! sees with the reason. The filesystem and sockets need no code here: the store's `WasiCtx`
//! has no preopened directory and denies every socket address and name lookup.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::logs::{AttemptLog, LogLevel};
use crate::egress::{Destination, EgressPolicy};
use crate::secrets::TaskSecrets;

/// Limits of one attempt's outgoing HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressLimits {
    /// From the request to the end of its response body.
    pub request_timeout: Duration,
    /// Largest response body, in bytes.
    pub max_response_bytes: u64,
    /// Most requests one attempt may make.
    pub max_requests: u32,
}

impl Default for EgressLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 10 << 20,
            max_requests: 100,
        }
    }
}

/// The `wasi:http` hooks of one attempt.
pub(crate) struct OutgoingHttp {
    log: AttemptLog,
    policy: Arc<EgressPolicy>,
    secrets: Arc<TaskSecrets>,
    limits: EgressLimits,
    requests: u32,
}

impl OutgoingHttp {
    pub(crate) fn new(
        log: AttemptLog,
        policy: Arc<EgressPolicy>,
        secrets: Arc<TaskSecrets>,
        limits: EgressLimits,
    ) -> Self {
        Self {
            log,
            policy,
            secrets,
            limits,
            requests: 0,
        }
    }
}

impl OutgoingHttp {
    /// Requests the attempt made so far (refused ones included).
    pub(crate) fn requests(&self) -> u32 {
        self.requests
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;
type IoFuture = Box<dyn Future<Output = Result<()>> + Send>;
type SendResult = Result<(http::Response<WasiBody>, IoFuture)>;

/// How the message of every refusal the guest sees starts.
const REFUSED: &str = "refused by Hatchery: ";

/// A refusal the guest sees: `wasi:http`'s error codes carry no text but `internal-error`'s.
fn refused(log: &AttemptLog, reason: String) -> Error {
    log.push(LogLevel::Warn, format!("outbound HTTP refused: {reason}"));
    Error::InternalError(Some(format!("{REFUSED}{reason}")))
}

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        self.requests = self.requests.saturating_add(1);
        let (log, policy, secrets, limits, count) = (
            self.log.clone(),
            self.policy.clone(),
            self.secrets.clone(),
            self.limits,
            self.requests,
        );
        Box::new(async move {
            if count > limits.max_requests {
                return Err(refused(
                    &log,
                    format!(
                        "this attempt made more than {} requests",
                        limits.max_requests
                    ),
                ));
            }
            let method = request.method().as_str().to_owned();
            let uri = request.uri().clone();
            let host = uri.host().unwrap_or_default().to_owned();
            let started = Instant::now();
            let sent = send(request, &policy, &secrets, limits, &log).await;
            let elapsed = started.elapsed().as_millis();
            match &sent {
                Ok((response, _)) => log.push(
                    LogLevel::Info,
                    format!(
                        "HTTP {method} {host} → {} in {elapsed} ms",
                        response.status().as_u16()
                    ),
                ),
                // Refusals were logged with their reason.
                Err(Error::InternalError(Some(message))) if message.starts_with(REFUSED) => {}
                Err(error) => log.push(
                    LogLevel::Warn,
                    format!("HTTP {method} {host} failed after {elapsed} ms: {error}"),
                ),
            }
            sent
        })
    }
}

/// Checks `request` against `policy`, resolves and checks its host, connects, sends it.
async fn send(
    mut request: http::Request<WasiBody>,
    policy: &EgressPolicy,
    secrets: &TaskSecrets,
    limits: EgressLimits,
    log: &AttemptLog,
) -> SendResult {
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let uri = request.uri().clone();
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        other => {
            return Err(refused(
                log,
                format!("scheme `{}` is not http or https", other.unwrap_or("")),
            ));
        }
    };
    let host = uri
        .host()
        .ok_or(Error::HttpRequestUriInvalid)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let method = request.method().as_str().to_ascii_uppercase();
    let destination = Destination {
        scheme: if https { "https" } else { "http" },
        host: &host,
        port,
        method: &method,
    };
    let matching = policy
        .check(&destination)
        .map_err(|refusal| refused(log, refusal.to_string()))?;
    // Secrets go only to hosts the allowlist names: fill the placeholders now.
    for value in request.headers_mut().values_mut() {
        let Ok(text) = value.to_str() else { continue };
        if !text.contains("{{secret:") {
            continue;
        }
        let filled = secrets.substitute(text).map_err(|name| {
            refused(
                log,
                format!("a header names secret `{name}`, which this workflow may not read"),
            )
        })?;
        let mut header =
            http::HeaderValue::from_str(&filled).map_err(|_| Error::HttpRequestHeaderSize {
                field_name: None,
                field_size: None,
            })?;
        header.set_sensitive(true);
        *value = header;
    }
    let resolved: Vec<SocketAddr> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port)))
            .await
        {
            Ok(Ok(addresses)) => addresses.collect(),
            Ok(Err(_)) => {
                return Err(Error::DnsError {
                    rcode: None,
                    info_code: None,
                });
            }
            Err(_) => return Err(Error::DnsTimeout),
        };
    let mut last_refusal = None;
    let mut address = None;
    for candidate in resolved {
        match EgressPolicy::check_address(&host, candidate.ip(), &matching) {
            Ok(()) => {
                address = Some(candidate);
                break;
            }
            Err(refusal) => last_refusal = Some(refusal),
        }
    }
    let Some(address) = address else {
        return Err(match last_refusal {
            Some(refusal) => refused(log, refusal.to_string()),
            None => Error::DestinationNotFound,
        });
    };
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Error::ConnectionRefused);
        }
        Ok(Err(e)) => return Err(Error::Connect(e)),
        Err(_) => return Err(Error::ConnectionTimeout),
    };
    let io: Box<dyn Stream> = if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let tls = tokio::time::timeout_at(deadline, tls_connector().connect(name, stream))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Tls)?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = tokio::time::timeout_at(
        deadline,
        hyper::client::conn::http1::Builder::new()
            .handshake(wasmtime_wasi_http::io::TokioIo::new(io)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // The connection lives in its own task until the response is read or the deadline passes.
    tokio::spawn(async move {
        let _ = tokio::time::timeout_at(deadline, connection).await;
    });
    // Sent to the origin, the request line carries only the path and query.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = tokio::time::timeout_at(deadline, sender.send_request(request))
        .await
        .map_err(|_| Error::HttpResponseTimeout)??;
    let response = response.map(|incoming| {
        CappedBody {
            incoming,
            remaining: limits.max_response_bytes,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
        .boxed_unsync()
    });
    let io: IoFuture = Box::new(async { Ok(()) });
    Ok((response, io))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// One TLS client configuration for the process: the web's root certificates.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| unreachable!("ring supports the default TLS versions"))
            .with_root_certificates(roots)
            .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// A response body cut at a size and a deadline.
struct CappedBody {
    incoming: hyper::body::Incoming,
    remaining: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let size = frame.data_ref().map_or(0, |data| data.len() as u64);
                if size > self.remaining {
                    return Poll::Ready(Some(Err(Error::HttpResponseBodySize(None))));
                }
                self.remaining -= size;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
