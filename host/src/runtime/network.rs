//! The outside world as a task sees it: `wasi:http` linked so that interpreters load, with every
//! outgoing request refused (and the refusal written to the task's log).
//!
//! The filesystem and sockets need no code here: the store's `WasiCtx` has no preopened
//! directory and denies every socket address and name lookup.

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::logs::{AttemptLog, LogLevel};

/// The `wasi:http` hooks of one attempt.
pub(crate) struct RefuseOutgoing {
    log: AttemptLog,
}

impl RefuseOutgoing {
    pub(crate) fn new(log: AttemptLog) -> Self {
        Self { log }
    }
}

/// What a refused request's log line says.
pub(crate) fn refusal(method: &http::Method, uri: &http::Uri) -> String {
    let host = uri.host().unwrap_or("(no host)");
    format!("outbound HTTP refused: {method} {host}: this node allows tasks no outbound HTTP")
}

type SendResult = Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
)>;

impl WasiHttpHooks for RefuseOutgoing {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        self.log
            .push(LogLevel::Warn, refusal(request.method(), request.uri()));
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_method_and_host() {
        let uri: http::Uri = "https://api.example.com/v1/charge".parse().expect("uri");
        assert_eq!(
            refusal(&http::Method::POST, &uri),
            "outbound HTTP refused: POST api.example.com: this node allows tasks no outbound HTTP"
        );
    }
}
