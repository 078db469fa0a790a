//! The load generator's HTTP/1.1 client against a server that answers with the fuzzer's bytes
//! and closes: a status or a counted failure, a body no longer than what was sent and within
//! `MAX_BODY`, never a panic, a hang past the timeout or an allocation the answer asked for. The
//! chunked-body decoder is driven on the bytes directly too.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use triton_deploy::fuzzing::{Conn, Failure, MAX_BODY, dechunk};

struct Server {
    rt: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        Server { rt, listener }
    })
}

const REQUEST: &[u8] =
    b"POST /v2/models/m/infer HTTP/1.1\r\nhost: fuzz\r\ncontent-length: 2\r\n\r\n{}";

fuzz_target!(|data: &[u8]| {
    // The decoder alone: what it consumes and yields lies within its input.
    let mut out = Vec::new();
    if let Some(Ok(n)) = dechunk(data, &mut out) {
        assert!(n <= data.len() && out.len() <= data.len());
    }

    let s = server();
    let addr = s.listener.local_addr().unwrap();
    s.rt.block_on(async {
        let answer = async {
            let (mut sock, _) = s.listener.accept().await.unwrap();
            let mut req = vec![0u8; REQUEST.len()];
            let _ = sock.read_exact(&mut req).await;
            let _ = sock.write_all(data).await;
            let _ = sock.shutdown().await;
        };
        let ask = async {
            let mut conn = Conn::new(vec![addr].into());
            let r = conn.round_trip(REQUEST, Duration::from_secs(2)).await;
            match r {
                Ok(status) => {
                    assert!(status <= 999);
                    let body = conn.body();
                    assert!(body.len() <= data.len() && body.len() <= MAX_BODY);
                }
                // The server answered and closed: it was reached, and it did not stall.
                Err(f) => assert!(f != Failure::Connect && f != Failure::Timeout, "{f:?}"),
            }
        };
        tokio::join!(answer, ask);
    });
});
