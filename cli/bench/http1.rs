//! A lean HTTP/1.1 keep-alive client for the load generator's plain-`http://` path.
//!
//! A general client (reqwest/hyper) builds a header map, picks a pooled connection and allocates
//! per request; a load generator sends the same few requests millions of times. Here each request
//! is encoded once, in full (request line, headers, body), and each connection owns one reusable
//! read buffer, so a round trip is one write and as few reads as the answer needs: the overhead
//! that would otherwise be measured as the server's latency, or cap the rate, is gone. `https://`
//! endpoints keep using reqwest.
//!
//! Answers are read by `Content-Length`, `Transfer-Encoding: chunked`, or to the end of the
//! connection; `Connection: close` (or HTTP/1.0) is honoured by reconnecting. A keep-alive
//! connection the server closed while idle is reopened and the request resent once, as browsers
//! and hyper do.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where requests go: the resolved address and what the request line and `Host` header say.
#[derive(Debug, Clone)]
pub struct Target {
    /// Every address the host resolved to, tried in order when connecting.
    pub addrs: std::sync::Arc<[SocketAddr]>,
    host: String,
    path: String,
}

impl Target {
    /// `http://host[:port]/path` (plain HTTP only), resolved once.
    pub async fn new(url: &url::Url) -> Result<Target, String> {
        if url.scheme() != "http" {
            return Err(format!("{url}: not plain http"));
        }
        let host = url.host_str().ok_or_else(|| format!("{url}: no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("{host}: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{host}: no address"));
        }
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        Ok(Target {
            addrs: addrs.into(),
            host,
            path,
        })
    }

    /// The whole POST request, ready to write. `headers` are valid names and values (the
    /// caller checked them); a `host` among them replaces the URL's.
    pub fn post(&self, headers: &[(&str, String)], body: &[u8]) -> bytes::Bytes {
        let mut out = Vec::with_capacity(body.len() + 256);
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(self.host.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        for (k, v) in headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out.into()
    }
}

/// Why a round trip failed: the error codes the bench report counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made.
    Connect,
    /// No whole answer within the timeout.
    Timeout,
    /// The connection broke, or the answer was not HTTP.
    Reset,
    /// The answer's body is over [`MAX_BODY`] (announced or sent).
    TooLarge,
}

/// The largest answer body read (an inference answer past it is counted as an error, not held).
pub const MAX_BODY: usize = 256 << 20;
/// The largest answer head (status line and headers).
const MAX_HEAD: usize = 64 << 10;

impl Failure {
    /// The error code the bench report counts it under.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
            Failure::TooLarge => "too_large",
        }
    }
}

/// One connection (opened on first use, reopened after a close), its read buffer, and its
/// timeout timer.
///
/// The timer is not armed per request (that is a timer-wheel insertion and removal per request,
/// a real share of a round trip on loopback): it is set to fire a little after the current
/// request's deadline and only moved when a later request's deadline passes it, so a request
/// times out between `timeout` and `timeout` plus the slack (half the timeout, at most 1 s).
pub struct Conn {
    io: Io,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    timer_at: tokio::time::Instant,
}

struct Io {
    addrs: std::sync::Arc<[SocketAddr]>,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// The body's place in `buf` after a round trip (or in `chunked` when it was chunked).
    body: std::ops::Range<usize>,
    chunked: Vec<u8>,
    was_chunked: bool,
    header_len: Option<usize>,
}

/// How the answer's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

impl Conn {
    /// A connection to the first of `addrs` that answers, opened on first use.
    pub fn new(addrs: std::sync::Arc<[SocketAddr]>) -> Conn {
        Conn {
            io: Io::new(addrs),
            timer: None,
            timer_at: tokio::time::Instant::now(),
        }
    }

    /// The last answer's body.
    pub fn body(&self) -> &[u8] {
        self.io.body()
    }

    /// The last answer's `Inference-Header-Content-Length` (Triton's binary tensor extension).
    pub fn header_len(&self) -> Option<usize> {
        self.io.header_len
    }

    /// Sends `request` and reads the answer; the status code, or why there is none.
    pub async fn round_trip(&mut self, request: &[u8], timeout: Duration) -> Result<u16, Failure> {
        let deadline = tokio::time::Instant::now() + timeout;
        if self.timer.is_none() || self.timer_at < deadline {
            let at = deadline + (timeout / 2).min(Duration::from_secs(1));
            match &mut self.timer {
                Some(t) => t.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.timer_at = at;
        }
        let timer = self.timer.as_mut().expect("armed");
        let r = tokio::select! {
            biased;
            r = self.io.exchange(request) => r,
            _ = timer => Err(Failure::Timeout),
        };
        if r.is_err() {
            self.io.stream = None;
        }
        r
    }
}

impl Io {
    fn new(addrs: std::sync::Arc<[SocketAddr]>) -> Io {
        Io {
            addrs,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            body: 0..0,
            chunked: Vec::new(),
            was_chunked: false,
            header_len: None,
        }
    }

    fn body(&self) -> &[u8] {
        if self.was_chunked {
            &self.chunked
        } else {
            &self.buf[self.body.clone()]
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<u16, Failure> {
        let reused = self.stream.is_some();
        match self.once(request).await {
            // A kept-alive connection the server had closed: one fresh attempt.
            Err(Stale) if reused => {
                self.stream = None;
                self.once(request).await.unwrap_or(Err(Failure::Reset))
            }
            Err(Stale) => Err(Failure::Reset),
            Ok(r) => r,
        }
    }

    async fn once(&mut self, request: &[u8]) -> Result<Result<u16, Failure>, Stale> {
        if self.stream.is_none() {
            let s = match TcpStream::connect(&self.addrs[..]).await {
                Ok(s) => s,
                Err(_) => return Ok(Err(Failure::Connect)),
            };
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().expect("connected");
        if stream.write_all(request).await.is_err() {
            return Err(Stale);
        }
        self.buf.clear();
        self.was_chunked = false;
        self.header_len = None;
        // The head.
        let (status, head_len, framing, close) = loop {
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(self.buf.capacity().max(4096));
            }
            let n = match stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) if self.buf.is_empty() => return Err(Stale),
                Ok(0) | Err(_) => return Ok(Err(Failure::Reset)),
                Ok(n) => n,
            };
            debug_assert!(n > 0);
            match parse_head(&self.buf, &mut self.header_len) {
                Head::Complete(h) => break h,
                Head::Partial if self.buf.len() < MAX_HEAD => continue,
                _ => return Ok(Err(Failure::Reset)),
            }
        };
        // The body.
        match framing {
            Framing::Length(n) => {
                if n > MAX_BODY {
                    self.stream = None;
                    return Ok(Err(Failure::TooLarge));
                }
                let end = head_len + n;
                if self.buf.len() < end {
                    self.buf.reserve(end - self.buf.len());
                }
                while self.buf.len() < end {
                    match stream.read_buf(&mut self.buf).await {
                        Ok(0) | Err(_) => return Ok(Err(Failure::Reset)),
                        Ok(_) => {}
                    }
                }
                self.body = head_len..end;
                if self.buf.len() == end && !close {
                    // The answer is all read and nothing can follow it until the next request:
                    // forget the socket's readable state now, so the next read waits for the
                    // answer instead of first trying (and failing) a read. tokio keeps a closed
                    // state (FIN, reset) through this, so a closed connection is still seen.
                    let _ = stream.try_io(tokio::io::Interest::READABLE, || {
                        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                    });
                }
            }
            Framing::Chunked => loop {
                self.chunked.clear();
                match dechunk(&self.buf[head_len..], &mut self.chunked) {
                    Some(Ok(_)) => {
                        self.was_chunked = true;
                        break;
                    }
                    Some(Err(())) => return Ok(Err(Failure::Reset)),
                    None if self.buf.len() - head_len > MAX_BODY + MAX_HEAD => {
                        // Chunk headers and trailers count too: a drip of empty trailers ends.
                        self.stream = None;
                        return Ok(Err(Failure::TooLarge));
                    }
                    None => {
                        if self.buf.capacity() - self.buf.len() < 4096 {
                            self.buf.reserve(self.buf.capacity().max(4096));
                        }
                        match stream.read_buf(&mut self.buf).await {
                            Ok(0) | Err(_) => return Ok(Err(Failure::Reset)),
                            Ok(_) => {}
                        }
                    }
                }
            },
            Framing::Close => {
                loop {
                    if self.buf.capacity() - self.buf.len() < 4096 {
                        self.buf.reserve(self.buf.capacity().max(4096));
                    }
                    match stream.read_buf(&mut self.buf).await {
                        Ok(0) => break,
                        Ok(_) if self.buf.len() - head_len > MAX_BODY => {
                            self.stream = None;
                            return Ok(Err(Failure::TooLarge));
                        }
                        Ok(_) => {}
                        Err(_) => return Ok(Err(Failure::Reset)),
                    }
                }
                self.body = head_len..self.buf.len();
                self.stream = None;
            }
        }
        if close {
            self.stream = None;
        }
        Ok(Ok(status))
    }
}

/// What the start of an answer's bytes say.
enum Head {
    /// Status, head length, body framing, whether the connection closes after it.
    Complete((u16, usize, Framing, bool)),
    /// More bytes are needed.
    Partial,
    /// Not an HTTP/1.1 answer we can read.
    Bad,
}

/// Parses an answer's head from `buf`; Triton's `Inference-Header-Content-Length` goes to
/// `header_len`.
#[inline]
fn parse_head(buf: &[u8], header_len: &mut Option<usize>) -> Head {
    // Uninitialised header slots: nothing to clear per answer.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; 32];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => {
            let status = resp.code.unwrap_or(0);
            let mut framing = Framing::Close;
            let mut close = resp.version == Some(0);
            for h in resp.headers.iter() {
                // Names by length first: most headers are none of these four.
                let name = h.name.as_bytes();
                let is = |want: &str| {
                    name.len() == want.len() && name.eq_ignore_ascii_case(want.as_bytes())
                };
                if is("content-length") {
                    match std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                    {
                        Some(n) => framing = Framing::Length(n),
                        None => return Head::Bad,
                    }
                } else if is("transfer-encoding") {
                    if h.value.eq_ignore_ascii_case(b"chunked") {
                        framing = Framing::Chunked;
                    }
                } else if is("inference-header-content-length") {
                    *header_len = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                } else if is("connection") {
                    if h.value.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if h.value.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
            if status == 204 || status == 304 || (100..200).contains(&status) {
                framing = Framing::Length(0);
            }
            Head::Complete((status, len, framing, close))
        }
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::Bad,
    }
}

/// Where an answer read so far stands: what a reader that is not async (the open loop's) checks
/// after each read. The same framing as [`Conn::round_trip`]'s.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// More bytes are needed.
    More,
    /// The whole answer: its status, its body's place in the buffer (or, when it was chunked,
    /// the decoded body is in `chunked`), and whether the connection is done after it.
    Done {
        status: u16,
        body: std::ops::Range<usize>,
        chunked: bool,
        close: bool,
    },
    /// No answer can come of these bytes.
    Failed(Failure),
}

/// Reads the answer in `buf` (everything received since the request was written; `eof` when the
/// server closed): Triton's `Inference-Header-Content-Length` goes to `header_len`, a chunked
/// body is decoded into `chunked`.
pub fn framed(
    buf: &[u8],
    eof: bool,
    header_len: &mut Option<usize>,
    chunked: &mut Vec<u8>,
) -> Framed {
    let (status, head_len, framing, close) = match parse_head(buf, header_len) {
        Head::Complete(h) => h,
        Head::Partial if buf.len() < MAX_HEAD && !eof => return Framed::More,
        _ => return Framed::Failed(Failure::Reset),
    };
    let done = |body, chunked, close| Framed::Done {
        status,
        body,
        chunked,
        close,
    };
    match framing {
        Framing::Length(n) if n > MAX_BODY => Framed::Failed(Failure::TooLarge),
        Framing::Length(n) => {
            let end = head_len + n;
            if buf.len() >= end {
                // Bytes past the answer (nothing was asked for): the connection is not reused.
                done(head_len..end, false, close || buf.len() > end)
            } else if eof {
                Framed::Failed(Failure::Reset)
            } else {
                Framed::More
            }
        }
        Framing::Chunked => {
            chunked.clear();
            match dechunk(&buf[head_len..], chunked) {
                Some(Ok(used)) => done(0..0, true, close || head_len + used < buf.len()),
                Some(Err(())) => Framed::Failed(Failure::Reset),
                None if buf.len() - head_len > MAX_BODY + MAX_HEAD => {
                    Framed::Failed(Failure::TooLarge)
                }
                None if eof => Framed::Failed(Failure::Reset),
                None => Framed::More,
            }
        }
        Framing::Close if buf.len() - head_len > MAX_BODY => Framed::Failed(Failure::TooLarge),
        Framing::Close if eof => done(head_len..buf.len(), false, true),
        Framing::Close => Framed::More,
    }
}

/// The server closed a kept-alive connection before answering.
struct Stale;

/// Decodes a chunked body from `input` into `out`: `None` while incomplete, the bytes consumed
/// when complete (trailers skipped), `Err` when it is not chunked encoding.
pub fn dechunk(input: &[u8], out: &mut Vec<u8>) -> Option<Result<usize, ()>> {
    let mut at = 0;
    loop {
        let line_end = find_crlf(&input[at..])? + at;
        let line = std::str::from_utf8(&input[at..line_end]).ok();
        let size = match line
            .map(|l| l.split(';').next().unwrap_or("").trim())
            .and_then(|s| usize::from_str_radix(s, 16).ok())
        {
            Some(s) => s,
            None => return Some(Err(())),
        };
        if size > MAX_BODY {
            return Some(Err(()));
        }
        at = line_end + 2;
        if size == 0 {
            // Trailers, each a line, then an empty line.
            loop {
                let end = find_crlf(&input[at..])? + at;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(Ok(at));
                }
            }
        }
        // `size` is at most MAX_BODY and `at` within the input: no overflow.
        if input.len() < at + size + 2 {
            return None;
        }
        if &input[at + size..at + size + 2] != b"\r\n" {
            return Some(Err(()));
        }
        out.extend_from_slice(&input[at..at + size]);
        at += size + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_status_framing_and_the_inference_header_length() {
        let mut header_len = None;
        let head =
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nInference-Header-Content-Length: 7\r\n\r\n";
        match parse_head(head, &mut header_len) {
            Head::Complete((200, n, Framing::Length(12), false)) => assert_eq!(n, head.len()),
            _ => panic!("not read as a complete head"),
        }
        assert_eq!(header_len, Some(7));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", &mut header_len),
            Head::Partial
        ));
        assert!(matches!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                &mut header_len
            ),
            Head::Bad
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.0 204 No Content\r\n\r\n", &mut header_len),
            Head::Complete((204, _, Framing::Length(0), true))
        ));
        assert!(matches!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                &mut header_len
            ),
            Head::Complete((200, _, Framing::Chunked, true))
        ));
    }

    #[test]
    fn framed_answers_are_whole_only_when_their_framing_says_so() {
        let (mut hl, mut ch) = (None, Vec::new());
        let mut f = |b: &[u8], eof| framed(b, eof, &mut hl, &mut ch);
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 0..plain.len() {
            assert_eq!(f(&plain[..cut], false), Framed::More, "{cut}");
            // Closed before the whole answer: broken (nothing at all is the caller's case).
            if cut > 0 {
                assert_eq!(f(&plain[..cut], true), Framed::Failed(Failure::Reset));
            }
        }
        let done = |status, body, chunked, close| Framed::Done {
            status,
            body,
            chunked,
            close,
        };
        assert_eq!(f(plain, false), done(200, 38..43, false, false));
        // Bytes past the answer: the connection is not kept.
        let mut extra = plain.to_vec();
        extra.extend_from_slice(b"HTTP/1.1");
        assert_eq!(f(&extra, false), done(200, 38..43, false, true));
        let closing = b"HTTP/1.1 503 Busy\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let n = closing.len();
        assert_eq!(f(closing, false), done(503, n..n, false, true));
        let to_end = b"HTTP/1.0 200 OK\r\n\r\nall of it";
        assert_eq!(f(to_end, false), Framed::More);
        assert_eq!(f(to_end, true), done(200, 19..28, false, true));
        let huge = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(f(huge.as_bytes(), false), Framed::Failed(Failure::TooLarge));
        assert_eq!(
            f(b"SSH-2.0-x\r\n\r\n", false),
            Framed::Failed(Failure::Reset)
        );
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(f(&chunked[..chunked.len() - 2], false), Framed::More);
        assert_eq!(f(chunked, false), done(200, 0..0, true, false));
        assert_eq!(ch, b"abc");
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let full = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for cut in 0..full.len() {
            let mut out = Vec::new();
            assert_eq!(dechunk(&full[..cut], &mut out), None, "cut at {cut}");
        }
        let mut out = Vec::new();
        assert_eq!(dechunk(full, &mut out), Some(Ok(full.len())));
        assert_eq!(out, b"Wikipedia");
        assert_eq!(dechunk(b"zz\r\n", &mut Vec::new()), Some(Err(())));
        assert_eq!(dechunk(b"2\r\nabc\r\n", &mut Vec::new()), Some(Err(())));
    }

    #[tokio::test]
    async fn requests_are_encoded_once_with_their_length() {
        let url = url::Url::parse("http://127.0.0.1:8000/v2/models/m/infer?x=1").unwrap();
        let t = Target::new(&url).await.unwrap();
        let req = t.post(&[("content-type", "application/json".into())], b"{}");
        assert_eq!(
            std::str::from_utf8(&req).unwrap(),
            "POST /v2/models/m/infer?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8000\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
        );
    }

    /// A server that answers with each framing in turn on one connection, then closes it.
    #[tokio::test]
    async fn framings_and_closed_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answers: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\nno",
        ];
        let server = tokio::spawn(async move {
            // First connection: three answers, then the server closes it (idle keep-alive end).
            // Second connection: one answer delimited by closing.
            for conn in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let replies: Vec<&[u8]> = if conn == 0 {
                    answers.clone()
                } else {
                    vec![b"HTTP/1.0 200 OK\r\n\r\nuntil close"]
                };
                for reply in replies {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let k = s.read(&mut buf).await.unwrap();
                        got.extend_from_slice(&buf[..k]);
                    }
                    // The first connection's answers dribble out a byte at a time.
                    let step = if conn == 0 { 1 } else { reply.len() };
                    for part in reply.chunks(step) {
                        s.write_all(part).await.unwrap();
                        s.flush().await.unwrap();
                    }
                }
            }
        });
        let url = url::Url::parse(&format!("http://{addr}/x")).unwrap();
        let t = Target::new(&url).await.unwrap();
        let req = t.post(&[], b"{}");
        let mut c = Conn::new(t.addrs.clone());
        let d = Duration::from_secs(5);
        assert_eq!(c.round_trip(&req, d).await, Ok(200));
        assert_eq!(c.body(), b"hello");
        assert_eq!(c.round_trip(&req, d).await, Ok(200));
        assert_eq!(c.body(), b"abcde");
        assert_eq!(c.round_trip(&req, d).await, Ok(400));
        assert_eq!(c.body(), b"no");
        // The server closed the first connection: the request is sent again on a new one.
        assert_eq!(c.round_trip(&req, d).await, Ok(200));
        assert_eq!(c.body(), b"until close");
        server.await.unwrap();
        // Nobody listens any more.
        assert_eq!(c.round_trip(&req, d).await, Err(Failure::Connect));
    }

    /// A server that answers each connection with one hostile answer in turn: what a load
    /// generator pointed at a broken or hostile server meets. Each is an error code, never a
    /// panic or a huge allocation.
    #[tokio::test]
    async fn hostile_answers_are_errors_not_panics_or_huge_buffers() {
        let endless_headers: Vec<u8> = b"HTTP/1.1 200 OK\r\n"
            .iter()
            .copied()
            .chain(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(4000))
            .collect();
        let answers: Vec<(Vec<u8>, Result<u16, Failure>)> = vec![
            // A length no integer holds.
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n".to_vec(),
                Err(Failure::Reset),
            ),
            // A length over the limit: not allocated.
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000\r\n\r\nabc".to_vec(),
                Err(Failure::TooLarge),
            ),
            // Chunk sizes that overflow, or pass the limit.
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nab"
                    .to_vec(),
                Err(Failure::Reset),
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10000001\r\nab".to_vec(),
                Err(Failure::Reset),
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nab".to_vec(),
                Err(Failure::Reset),
            ),
            // Headers without end.
            (endless_headers, Err(Failure::Reset)),
            // A body longer than announced: the announced part is the answer.
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nabcdef".to_vec(),
                Ok(200),
            ),
            // Not HTTP at all.
            (b"\x00\x01\x02garbage\r\n\r\n".to_vec(), Err(Failure::Reset)),
        ];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let replies: Vec<Vec<u8>> = answers.iter().map(|(a, _)| a.clone()).collect();
        let server = tokio::spawn(async move {
            for reply in replies {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let k = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..k]);
                }
                let _ = s.write_all(&reply).await;
                let _ = s.shutdown().await;
            }
            // A slow drip: the head, then a byte a second of a 100-byte body.
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
                .await;
            for _ in 0..3 {
                let _ = s.write_all(b"x").await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let url = url::Url::parse(&format!("http://{addr}/x")).unwrap();
        let t = Target::new(&url).await.unwrap();
        let req = t.post(&[], b"{}");
        for (i, (_, want)) in answers.iter().enumerate() {
            // A connection of its own for each answer.
            let mut c = Conn::new(t.addrs.clone());
            let got = c.round_trip(&req, Duration::from_secs(5)).await;
            assert_eq!(&got, want, "answer {i}");
            let held = c.io.buf.capacity();
            assert!(
                held <= 2 * (MAX_HEAD + (1 << 20)),
                "answer {i}: {held} bytes held"
            );
            if got == Ok(200) {
                assert_eq!(c.body(), b"ab");
            }
        }
        let mut c = Conn::new(t.addrs.clone());
        assert_eq!(
            c.round_trip(&req, Duration::from_millis(1500)).await,
            Err(Failure::Timeout)
        );
        server.abort();
    }

    /// Valid answers mutated byte by byte (a deterministic generator: the same cases every run)
    /// through the head parser and the chunked decoder: no panic, consumed lengths within the
    /// input, decoded bodies within the limit.
    #[test]
    fn mutated_answers_never_panic_the_parsers() {
        let seeds: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ninference-header-content-length: 3\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\nT: 1\r\n\r\n",
            b"4\r\nWiki\r\nff\r\npedia\r\n0\r\n\r\n",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let seed = seeds[(next() % 3) as usize];
            let mut b = seed.to_vec();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % (b.len() + 1);
                match next() % 4 {
                    0 if at < b.len() => b[at] = next() as u8,
                    1 => b.insert(at, b"0123456789abcdefF\r\n;-:"[(next() % 22) as usize]),
                    2 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => b.truncate(at),
                }
            }
            let mut header_len = None;
            if let Head::Complete((_, len, _, _)) = parse_head(&b, &mut header_len) {
                assert!(len <= b.len());
            }
            let mut out = Vec::new();
            if let Some(Ok(used)) = dechunk(&b, &mut out) {
                assert!(used <= b.len() && out.len() <= b.len());
            }
            // The open loop's reader, on every prefix of it, closed or not: a body within
            // what was received.
            for cut in [b.len() / 2, b.len()] {
                for eof in [false, true] {
                    let (mut hl, mut ch) = (None, Vec::new());
                    if let Framed::Done { body, chunked, .. } =
                        framed(&b[..cut], eof, &mut hl, &mut ch)
                    {
                        assert!(body.end <= cut && (!chunked || ch.len() <= cut));
                    }
                }
            }
        }
    }
}
