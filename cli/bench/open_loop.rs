//! The open loop on one thread, for the lean HTTP/1.1 client (plain `http://`): the thread that
//! keeps the schedule also writes each request at its intended time and reads the answers,
//! waiting for both in one `ppoll` (a nanosecond timeout) on an epoll set of its connections.
//!
//! Why not the runtime: handing each request from a pacer thread to a tokio worker costs the
//! worker's wake-up and the scheduler's work around it on every request. Against Triton at 500
//! requests/s, `perf stat` measured 83–106 µs of CPU per request that way and about half of
//! that here, where a request costs two wake-ups (its send time, its answer) and five system
//! calls (two `ppoll`, the write, one `epoll_wait`, the read). gRPC and HTTPS keep the runtime path ([`super::load`]).
//!
//! Each request in flight has its own connection (HTTP/1.1, no pipelining), reused once its
//! answer is read; a kept-alive connection the server closed is reopened and the request sent
//! again once, as [`super::http1::Conn`] does. Connections are opened without blocking, so a slow
//! connect never delays the next send.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, epoll};

use super::http1::{Failure, Framed, framed};
use super::load::{Schedule, Window};
use super::transport::Transport;

/// Connections open at most (one per request in flight): beyond it the generator is behind, and
/// its sends are late, which the report says.
const MAX_CONNS: usize = 20_000;

/// Runs the schedule over the lean client's connections on this thread, recording into `w`.
/// `spin`: how long before a send to stop sleeping and spin (the kernel's wake-up latency).
pub(super) fn run(t: &Transport, schedule: Schedule, w: &Window, spin: Duration) {
    let Some((target, requests)) = t.lean() else {
        return;
    };
    let epfd = match epoll::create(epoll::CreateFlags::CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("bench: no epoll instance ({e}); no requests sent");
            return;
        }
    };
    let mut l = Loop {
        t,
        w,
        addrs: &target.addrs,
        requests,
        timeout: t.timeout(),
        epfd,
        slots: Vec::new(),
        generations: Vec::new(),
        free: Vec::new(),
        idle: Vec::new(),
        deadlines: VecDeque::new(),
        busy: 0,
        seq: 0,
    };
    l.drive(schedule, spin);
}

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connecting (to `Conn::addr`), the request waiting.
    Connecting,
    /// The request partly written.
    Writing,
    /// The request written; the answer being read.
    Reading,
    /// Kept alive between requests.
    Idle,
}

struct Conn {
    stream: TcpStream,
    /// Which of the target's addresses it is (being) connected to.
    addr: usize,
    state: State,
    /// The request on it: its index, intended send time, sequence number (its deadline's
    /// entry), bytes written.
    req: usize,
    at: Instant,
    seq: u64,
    written: usize,
    /// A write stopped short: the connection also waits for writable until the rest is out.
    partial: bool,
    /// Whether it has answered before (closed before an answer then means stale), and whether
    /// the request on it was already sent again.
    reused: bool,
    retried: bool,
    buf: Vec<u8>,
    have: usize,
    chunked: Vec<u8>,
    header_len: Option<usize>,
}

struct Loop<'a> {
    t: &'a Transport,
    w: &'a Window,
    addrs: &'a [SocketAddr],
    requests: &'a [bytes::Bytes],
    timeout: Duration,
    epfd: std::os::fd::OwnedFd,
    slots: Vec<Option<Conn>>,
    /// Each slot's socket count: events carry it, so that an event of a socket already closed
    /// is not taken for its successor's.
    generations: Vec<u32>,
    free: Vec<usize>,
    idle: Vec<usize>,
    /// The requests in flight in the order sent, with their deadlines: `(deadline, slot, seq)`
    /// (one timeout for all, so they are in deadline order too).
    deadlines: VecDeque<(Instant, usize, u64)>,
    busy: usize,
    seq: u64,
}

fn data(slot: usize, generation: u32) -> epoll::EventData {
    epoll::EventData::new_u64((u64::from(generation) << 32) | slot as u64)
}

/// A non-blocking socket connecting to `addr`: connected, in progress, or why not.
fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
        Err(e) => return Err(e),
    }
    let s = TcpStream::from(s);
    let _ = s.set_nodelay(true);
    Ok(s)
}

impl Loop<'_> {
    fn drive(&mut self, mut schedule: Schedule, spin: Duration) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        let mut next = schedule.next();
        loop {
            let now = Instant::now();
            // Sends due (none while every connection allowed is busy: those sends are late).
            while let Some((at, i)) = next {
                if at > now || !self.can_send() {
                    break;
                }
                self.w.sent_one(at, schedule.started());
                self.send(i, at);
                next = schedule.next();
            }
            self.expire(now);
            if next.is_none() && self.busy == 0 {
                return;
            }
            // Sleep until the next send (less the spin) or the first deadline, or an event.
            let due = next.filter(|_| self.can_send());
            let wake = [
                due.map(|(at, _)| at.checked_sub(spin).unwrap_or(at)),
                self.deadlines.front().map(|d| d.0),
            ]
            .into_iter()
            .flatten()
            .min();
            let now = Instant::now();
            let ready = match wake {
                Some(at) if at <= now => true,
                wake => {
                    let ts = wake.map(|at| {
                        let d = at - now;
                        Timespec {
                            tv_sec: d.as_secs() as _,
                            tv_nsec: d.subsec_nanos() as _,
                        }
                    });
                    let mut fds = [PollFd::new(&self.epfd, PollFlags::IN)];
                    matches!(rustix::event::poll(&mut fds, ts.as_ref()), Ok(n) if n > 0)
                }
            };
            if ready {
                events.clear();
                let zero = Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                if epoll::wait(
                    &self.epfd,
                    rustix::buffer::spare_capacity(&mut events),
                    Some(&zero),
                )
                .is_ok()
                {
                    for ev in &events {
                        let (flags, d) = (ev.flags, ev.data.u64());
                        self.event(d as u32 as usize, (d >> 32) as u32, flags);
                    }
                }
            }
            // The last stretch before a send: spun, the kernel's wake-up being later than this.
            if let Some((at, _)) = due {
                while Instant::now() < at && at - Instant::now() <= spin {
                    std::hint::spin_loop();
                }
            }
        }
    }

    /// Whether a request can go out now: a connection is idle, or another may be opened.
    fn can_send(&self) -> bool {
        !self.idle.is_empty() || self.slots.len() - self.free.len() < MAX_CONNS
    }

    /// Puts request `i`, intended at `at`, on an idle connection or a new one.
    fn send(&mut self, i: usize, at: Instant) {
        let slot = match self.idle.pop() {
            Some(slot) => slot,
            None => match self.open(0) {
                Ok(c) => self.place(c),
                Err(()) => {
                    record(
                        self.w,
                        at,
                        self.t.answered_lean(i, Err(Failure::Connect), &[], None),
                    );
                    return;
                }
            },
        };
        self.busy += 1;
        self.seq += 1;
        let seq = self.seq;
        self.deadlines.push_back((at + self.timeout, slot, seq));
        let c = self.slots[slot].as_mut().expect("a live slot");
        c.req = i;
        c.at = at;
        c.seq = seq;
        c.written = 0;
        c.partial = false;
        c.retried = false;
        c.have = 0;
        c.header_len = None;
        if c.state == State::Idle {
            c.state = State::Writing;
            self.write(slot);
        }
    }

    /// A new connection (to the first address from `from` that accepts a socket), not yet in a
    /// slot.
    fn open(&self, from: usize) -> Result<Conn, ()> {
        for (k, addr) in self.addrs.iter().enumerate().skip(from) {
            if let Ok(stream) = connect(*addr) {
                return Ok(Conn {
                    stream,
                    addr: k,
                    state: State::Connecting,
                    req: 0,
                    at: Instant::now(),
                    seq: 0,
                    written: 0,
                    partial: false,
                    reused: false,
                    retried: false,
                    buf: vec![0; 16 * 1024],
                    have: 0,
                    chunked: Vec::new(),
                    header_len: None,
                });
            }
        }
        Err(())
    }

    /// Puts a new connection in a free slot.
    fn place(&mut self, c: Conn) -> usize {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.generations.push(0);
            self.slots.len() - 1
        });
        self.install(slot, c);
        slot
    }

    /// Puts a connecting socket in `slot` (its next socket count) and in the epoll set
    /// (writable: connected).
    fn install(&mut self, slot: usize, c: Conn) {
        self.generations[slot] = self.generations[slot].wrapping_add(1);
        let _ = epoll::add(
            &self.epfd,
            &c.stream,
            data(slot, self.generations[slot]),
            epoll::EventFlags::OUT | epoll::EventFlags::IN,
        );
        self.slots[slot] = Some(c);
    }

    /// Replaces the socket in `slot` with a new one to address `from` onwards, keeping the
    /// request on it; `false` when none could be made.
    fn reopen(&mut self, slot: usize, from: usize) -> bool {
        let Ok(mut fresh) = self.open(from) else {
            return false;
        };
        let old = self.slots[slot].take().expect("a live slot");
        fresh.req = old.req;
        fresh.at = old.at;
        fresh.seq = old.seq;
        fresh.retried = old.retried;
        fresh.buf = old.buf;
        fresh.chunked = old.chunked;
        self.install(slot, fresh);
        true
    }

    fn event(&mut self, slot: usize, generation: u32, flags: epoll::EventFlags) {
        let Some(c) = self.slots.get_mut(slot).and_then(|c| c.as_mut()) else {
            return;
        };
        if self.generations[slot] != generation {
            return;
        }
        match c.state {
            State::Connecting => {
                if !flags.intersects(
                    epoll::EventFlags::OUT | epoll::EventFlags::ERR | epoll::EventFlags::HUP,
                ) {
                    return;
                }
                match c.stream.take_error() {
                    Ok(None) if !flags.contains(epoll::EventFlags::ERR) => {
                        let _ = epoll::modify(
                            &self.epfd,
                            &c.stream,
                            data(slot, self.generations[slot]),
                            epoll::EventFlags::IN,
                        );
                        c.state = State::Writing;
                        self.write(slot);
                    }
                    _ => {
                        let next = c.addr + 1;
                        if !self.reopen(slot, next) {
                            self.finish(slot, Err(Failure::Connect));
                        }
                    }
                }
            }
            State::Writing => {
                if flags.contains(epoll::EventFlags::IN) {
                    self.read(slot);
                } else if flags.intersects(
                    epoll::EventFlags::OUT | epoll::EventFlags::ERR | epoll::EventFlags::HUP,
                ) {
                    self.write(slot);
                }
            }
            State::Reading => self.read(slot),
            State::Idle => {
                // Nothing is asked: the server closed it (or sent what no one asked for).
                self.close(slot);
            }
        }
    }

    /// Writes what is left of the request; once all is written the answer is awaited.
    fn write(&mut self, slot: usize) {
        let requests = self.requests;
        let c = self.slots[slot].as_mut().expect("a live slot");
        let req = &requests[c.req % requests.len()];
        while c.written < req.len() {
            match (&c.stream).write(&req[c.written..]) {
                Ok(0) => return self.stale_or(slot, Failure::Reset),
                Ok(n) => c.written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Wait until it is writable again (also readable: an early answer).
                    let _ = epoll::modify(
                        &self.epfd,
                        &c.stream,
                        data(slot, self.generations[slot]),
                        epoll::EventFlags::OUT | epoll::EventFlags::IN,
                    );
                    c.partial = true;
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return self.stale_or(slot, Failure::Reset),
            }
        }
        // Written in one go (the usual case), the interest stays readable only: no system call.
        if std::mem::take(&mut c.partial) {
            let _ = epoll::modify(
                &self.epfd,
                &c.stream,
                data(slot, self.generations[slot]),
                epoll::EventFlags::IN,
            );
        }
        c.state = State::Reading;
    }

    /// Reads what has arrived; a whole answer finishes the request.
    fn read(&mut self, slot: usize) {
        let c = self.slots[slot].as_mut().expect("a live slot");
        // An answer before the whole request was written (a refusal): the rest of the request
        // would be read as the next one, so the connection is not kept.
        let unfinished = c.state == State::Writing;
        if c.buf.len() - c.have < 4096 {
            let grow = c.buf.len().max(4096);
            c.buf.resize(c.buf.len() + grow, 0);
        }
        let eof = match (&c.stream).read(&mut c.buf[c.have..]) {
            Ok(0) => true,
            Ok(n) => {
                c.have += n;
                false
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted =>
            {
                return;
            }
            Err(_) if c.have == 0 => return self.stale_or(slot, Failure::Reset),
            Err(_) => return self.finish(slot, Err(Failure::Reset)),
        };
        if eof && c.have == 0 {
            return self.stale_or(slot, Failure::Reset);
        }
        match framed(&c.buf[..c.have], eof, &mut c.header_len, &mut c.chunked) {
            Framed::More => {}
            Framed::Done {
                status,
                body,
                chunked,
                close,
            } => {
                let (t, w) = (self.t, self.w);
                let r = {
                    let body = if chunked {
                        &c.chunked[..]
                    } else {
                        &c.buf[body]
                    };
                    t.answered_lean(c.req, Ok(status), body, c.header_len)
                };
                record(w, c.at, r);
                self.done(slot, close || eof || unfinished);
            }
            Framed::Failed(f) => self.finish(slot, Err(f)),
        }
    }

    /// A connection that broke before any answer: a kept-alive one is reopened and the request
    /// sent again, once; otherwise the request fails with `f`.
    fn stale_or(&mut self, slot: usize, f: Failure) {
        let c = self.slots[slot].as_mut().expect("a live slot");
        if c.reused && !c.retried {
            c.retried = true;
            if self.reopen(slot, 0) {
                return;
            }
        }
        self.finish(slot, Err(f));
    }

    /// Ends the request on `slot` with a failure (the connection is closed).
    fn finish(&mut self, slot: usize, r: Result<u16, Failure>) {
        let c = self.slots[slot].as_ref().expect("a live slot");
        let (req, at) = (c.req, c.at);
        let r = self.t.answered_lean(req, r, &[], None);
        record(self.w, at, r);
        self.done(slot, true);
    }

    /// The request on `slot` is over: the connection goes back to idle, or is closed.
    fn done(&mut self, slot: usize, close: bool) {
        self.busy -= 1;
        if close {
            self.close(slot);
        } else {
            let c = self.slots[slot].as_mut().expect("a live slot");
            c.state = State::Idle;
            c.reused = true;
            c.seq = 0;
            self.idle.push(slot);
        }
    }

    /// Closes the connection in `slot` (an idle one leaves the idle list).
    fn close(&mut self, slot: usize) {
        if let Some(c) = self.slots[slot].take() {
            if c.state == State::Idle {
                self.idle.retain(|&s| s != slot);
            }
            drop(c.stream);
            self.free.push(slot);
        }
    }

    /// Fails the requests whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, slot, seq)) = self.deadlines.front() {
            let live = self.slots[slot]
                .as_ref()
                .is_some_and(|c| c.seq == seq && c.state != State::Idle);
            if live && deadline > now {
                return;
            }
            self.deadlines.pop_front();
            if live {
                self.finish(slot, Err(Failure::Timeout));
            }
        }
    }
}

/// Records a request's outcome: its latency from the intended send time, or its error code.
fn record(w: &Window, at: Instant, r: Result<(), String>) {
    match r {
        Ok(()) => w.record(at.elapsed().as_micros() as u64),
        Err(code) => w.error(code),
    }
}
