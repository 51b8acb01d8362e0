//! The AF_XDP mode: one AF_XDP socket per RX queue of the interface, each served by a poll-mode
//! worker thread pinned to a core. The redirect program (see [`crate::xdp`]) hands the workers
//! only VIP flows; a worker classifies them in batches with [`herd_packet::classify()`], drops what
//! other nodes own, and hands the rest to the stack through its [`Port`], once it has finished
//! any transport checksum a sender's offload left unfinished ([`herd_packet::offload`]). Each
//! worker keeps the handshakes it records in a flow table of its own ([`Flows`]), which it alone
//! reads and writes; what the kernel says of a connection comes in front of each frame, put
//! there by the redirect program ([`Served::from_prefix`]). How a worker waits for its frames,
//! driving the NAPI processing itself or woken by it, is [`crate::wait`]'s; when it is behind,
//! and what the kernel then sheds for it, [`crate::overload`]'s.

use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use core_affinity::CoreId;
use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;
use herd_config::ZeroCopy;
use xsk_rs::config::{BindFlags, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::handoff::Port;
use crate::overload::Overload;
use crate::wait::{self, Waiting};
use crate::xdp::BehindSwitch;
use herd_packet::classify::{classify, FarmTable, Verdict};
use herd_packet::clock::coarse_monotonic_ns;
use herd_packet::counts::{Count, Traffic};
use herd_packet::flows::Flows;
use herd_packet::kernel::Served;
use herd_packet::offload::{complete_partial_checksum, Completion};
use herd_packet::table::SharedTable;

/// Frames of a socket's memory, all of them on the fill ring or in the worker's hands: the
/// socket only receives, so none is kept for sending.
const FRAMES: u32 = 2048;

/// The bytes in front of every frame a worker takes: the kernel's answer
/// ([`Served::from_prefix`]), put there by the redirect program.
const PREFIX: usize = 4;

/// How many empty polls of the RX ring a busy-polling worker makes before it sleeps in
/// `poll(2)`: long enough to ride out the gaps of a busy link, short enough that an idle worker
/// sleeps.
const SPINS_BEFORE_SLEEP: u32 = 1024;

/// Frames the NAPI processing a busy-polling worker drives takes at once: NAPI's usual weight.
const BUSY_POLL_BUDGET: u16 = 64;

/// How long a sleeping worker waits for a frame before it looks at the stop flag again.
const SLEEP_MS: i32 = 100;

/// How often a busy worker asks its socket how many frames the kernel dropped before it.
const SHED_READ_NS: u64 = 100_000_000;

/// How often at most a worker that cannot keep up says so.
const SHED_LOG_NS: u64 = 10_000_000_000;

/// What can go wrong opening a socket or starting a worker.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// The socket's memory could not be created.
    #[error("AF_XDP memory for queue {queue}: {message}")]
    Umem {
        /// The RX queue.
        queue: u32,
        /// Why.
        message: String,
    },
    /// The socket could not be created or bound.
    #[error("AF_XDP socket on {interface} queue {queue} ({mode}): {message}")]
    Socket {
        /// The interface.
        interface: String,
        /// The RX queue.
        queue: u32,
        /// `zero-copy` or `copy`.
        mode: &'static str,
        /// Why.
        message: String,
        /// The system's error number, when the system refused it.
        errno: Option<i32>,
    },
    /// The worker thread could not be started.
    #[error("cannot start the worker of queue {queue}: {source}")]
    Thread {
        /// The RX queue.
        queue: u32,
        /// Why.
        source: std::io::Error,
    },
}

impl AfXdpError {
    /// Whether the queue already has an AF_XDP socket (another program's).
    pub fn queue_taken(&self) -> bool {
        matches!(
            self,
            AfXdpError::Socket {
                errno: Some(libc::EBUSY),
                ..
            }
        )
    }
}

/// An AF_XDP socket bound to one RX queue, with its memory and rings.
pub struct QueueSocket {
    queue: u32,
    zero_copy: bool,
    /// Whether the kernel took the busy-polling options.
    busy_poll_asked: bool,
    umem: Umem,
    rx: RxQueue,
    fill: FillQueue,
    frames: Vec<FrameDesc>,
    // Held so the socket and its completion ring live as long as the receiving rings.
    _tx: TxQueue,
    _completion: CompQueue,
}

impl QueueSocket {
    /// Opens a socket on RX queue `queue` of `interface`, in zero-copy mode where `zero_copy`
    /// allows and the driver supports it, in copy mode otherwise. The socket receives nothing
    /// until the redirect program has it ([`crate::xdp::XdpProgram::add_socket`]).
    pub fn open(interface: &str, queue: u32, zero_copy: ZeroCopy) -> Result<Self, AfXdpError> {
        match zero_copy {
            ZeroCopy::Off => Self::bind(interface, queue, false),
            ZeroCopy::On => Self::bind(interface, queue, true),
            ZeroCopy::Auto => Self::bind(interface, queue, true).or_else(|error| {
                tracing::info!(
                    %interface,
                    queue,
                    "zero-copy refused ({error}); using copy mode"
                );
                Self::bind(interface, queue, false)
            }),
        }
    }

    fn bind(interface: &str, queue: u32, zero_copy: bool) -> Result<Self, AfXdpError> {
        let mode = if zero_copy { "zero-copy" } else { "copy" };
        let socket_error = |message: String, errno: Option<i32>| AfXdpError::Socket {
            interface: interface.to_owned(),
            queue,
            mode,
            message,
            errno,
        };
        let ring = |size| QueueSize::new(size).expect("ring sizes here are powers of two");
        let umem_config = UmemConfig::builder()
            .fill_queue_size(ring(FRAMES))
            .comp_queue_size(ring(64))
            .build()
            .map_err(|error| AfXdpError::Umem {
                queue,
                message: error.to_string(),
            })?;
        let frame_count = NonZeroU32::new(FRAMES).expect("FRAMES is not zero");
        let (umem, frames) =
            Umem::new(umem_config, frame_count, false).map_err(|error| AfXdpError::Umem {
                queue,
                message: with_source(&error),
            })?;
        let mut flags = BindFlags::XDP_USE_NEED_WAKEUP;
        flags |= if zero_copy {
            BindFlags::XDP_ZEROCOPY
        } else {
            BindFlags::XDP_COPY
        };
        let config = SocketConfig::builder()
            .rx_queue_size(ring(FRAMES))
            .tx_queue_size(ring(64))
            // herd attaches its own program, which redirects only VIP flows.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(flags)
            .build();
        let name = interface
            .parse()
            .map_err(|_| socket_error("the interface name holds a NUL byte".into(), None))?;
        // SAFETY: the memory is new and used by this one socket, so no other socket shares
        // the (interface, queue) pair through it.
        let (tx, rx, rings) = unsafe { Socket::new(config, &umem, &name, queue) }
            .map_err(|error| socket_error(with_source(&error), errno(&error)))?;
        let (fill, completion) =
            rings.ok_or_else(|| socket_error("no fill ring for a new memory".into(), None))?;
        let busy_poll_asked = match wait::prefer_busy_poll(rx.fd().as_raw_fd(), BUSY_POLL_BUDGET) {
            Ok(()) => true,
            Err(error) => {
                tracing::info!(
                    %interface,
                    queue,
                    "the kernel refused preferred busy polling ({error}): the worker is woken by it"
                );
                false
            }
        };
        Ok(Self {
            queue,
            zero_copy,
            busy_poll_asked,
            umem,
            rx,
            fill,
            frames,
            _tx: tx,
            _completion: completion,
        })
    }

    /// The RX queue the socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Whether the socket runs in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The socket's descriptor, for the redirect program's socket map.
    pub fn fd(&self) -> &xsk_rs::socket::Fd {
        self.rx.fd()
    }
}

/// A worker's counters, each written by the worker alone and read by anyone. On a cache line
/// of their own, so that workers do not slow each other down by sharing one.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames taken from the socket.
    pub received: AtomicU64,
    /// Their bytes.
    pub received_bytes: AtomicU64,
    /// Frames of flows this node owns.
    pub accepted: AtomicU64,
    /// Their bytes.
    pub accepted_bytes: AtomicU64,
    /// Frames dropped: other nodes' flows, and frames the redirect program should have kept.
    pub dropped: AtomicU64,
    /// Their bytes.
    pub dropped_bytes: AtomicU64,
    /// Frames written to the stack's port.
    pub handed_off: AtomicU64,
    /// Frames the port refused.
    pub errors: AtomicU64,
    /// Frames the kernel dropped before the worker saw them, its ring being full or no frame
    /// of its memory free: the worker could not keep up, and the kernel shed the excess.
    pub shed: AtomicU64,
    /// Frames whose TCP or UDP checksum the worker finished before the hand-off.
    pub checksums_completed: AtomicU64,
}

impl Counters {
    /// The packets and bytes the worker accepted and dropped. `passed` is zero: the kernel's
    /// traffic never reaches a worker, so the caller adds the redirect program's
    /// [`crate::xdp::XdpProgram::traffic`], which counts it (and what that program drops
    /// itself). A frame the redirect program should have kept and a worker hands to the stack
    /// untouched is only in [`Counters::received`].
    ///
    /// Each counter is read on its own while the worker may publish a batch, so packets and
    /// bytes may be a batch apart; the next read catches up.
    pub fn traffic(&self) -> Traffic {
        let read = |packets: &AtomicU64, bytes: &AtomicU64| Count {
            packets: packets.load(Ordering::Relaxed),
            bytes: bytes.load(Ordering::Relaxed),
        };
        Traffic {
            accepted: read(&self.accepted, &self.accepted_bytes),
            dropped: read(&self.dropped, &self.dropped_bytes),
            passed: Count::default(),
            shed: self.shed.load(Ordering::Relaxed),
            checksums_completed: self.checksums_completed.load(Ordering::Relaxed),
        }
    }
}

/// What a worker needs besides its socket.
pub struct WorkerSettings {
    /// The core to pin the thread to.
    pub core: CoreId,
    /// Frames taken from the ring at once.
    pub batch: usize,
    /// The interface's own MAC, the destination of the frames handed to the stack.
    pub if_mac: [u8; 6],
    /// The table the membership side publishes.
    pub table: Arc<SharedTable<FarmTable>>,
    /// Set to make the worker finish.
    pub stop: Arc<AtomicBool>,
    /// How the worker tells the redirect program it is behind.
    pub behind: BehindSwitch,
}

/// A running worker.
pub struct Worker {
    queue: u32,
    tid: libc::pid_t,
    counters: Arc<CachePadded<Counters>>,
    thread: JoinHandle<Finished>,
}

/// What a worker did, once it has finished.
#[derive(Debug)]
pub struct Finished {
    /// Its final counts.
    pub totals: Totals,
    /// The distribution of its batch processing times, in nanoseconds.
    pub batches: Histogram<u64>,
}

impl Worker {
    /// Starts a worker thread serving `socket` and handing accepted frames to `port`.
    pub fn spawn(
        socket: QueueSocket,
        port: Port,
        settings: WorkerSettings,
    ) -> Result<Self, AfXdpError> {
        let queue = socket.queue;
        let counters = Arc::new(CachePadded::new(Counters::default()));
        let shared = Arc::clone(&counters);
        let (started, tid) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("herd-q{queue}"))
            .spawn(move || {
                if !core_affinity::set_for_current(settings.core) {
                    tracing::warn!(
                        queue,
                        core = settings.core.id,
                        "cannot pin the worker to its core"
                    );
                }
                let ready = Loop::new(socket, port, settings, &shared);
                // Said only once the fill ring holds frames: until then the kernel drops
                // what arrives on the queue, and the caller opens the node after this.
                // SAFETY: gettid has no preconditions and cannot fail.
                let _ = started.send(unsafe { libc::gettid() });
                ready.run()
            })
            .map_err(|source| AfXdpError::Thread { queue, source })?;
        let tid = tid.recv().map_err(|_| AfXdpError::Thread {
            queue,
            source: std::io::Error::other("the worker ended before it started"),
        })?;
        Ok(Self {
            queue,
            tid,
            counters,
            thread,
        })
    }

    /// The RX queue the worker serves.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The worker thread's id in the kernel, to account for its CPU time.
    pub fn tid(&self) -> libc::pid_t {
        self.tid
    }

    /// The worker's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Waits for the worker to finish (after its stop flag is set).
    pub fn join(self) -> Finished {
        self.thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// A worker's counts as plain integers: its running totals, which it publishes into its
/// [`Counters`] once per batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Frames taken from the socket.
    pub received: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Frames of flows this node owns.
    pub accepted: u64,
    /// Their bytes.
    pub accepted_bytes: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
    /// Frames written to the stack's port.
    pub handed_off: u64,
    /// Frames the port refused.
    pub errors: u64,
    /// Frames the kernel shed before the worker (see [`Counters::shed`]).
    pub shed: u64,
    /// Frames whose TCP or UDP checksum the worker finished before the hand-off.
    pub checksums_completed: u64,
}

impl Totals {
    /// Finishes `frame`'s transport checksum if the sender's offload left it unfinished: the
    /// stack behind the port would drop the frame for it (see [`herd_packet::offload`]).
    #[inline]
    fn complete_checksum(&mut self, frame: &mut [u8]) {
        if complete_partial_checksum(frame) == Ok(Completion::Completed) {
            self.checksums_completed += 1;
        }
    }

    fn publish(&self, to: &Counters) {
        // One writer per counter: plain stores, no read-modify-write.
        to.received.store(self.received, Ordering::Relaxed);
        to.received_bytes
            .store(self.received_bytes, Ordering::Relaxed);
        to.accepted.store(self.accepted, Ordering::Relaxed);
        to.accepted_bytes
            .store(self.accepted_bytes, Ordering::Relaxed);
        to.dropped.store(self.dropped, Ordering::Relaxed);
        to.dropped_bytes
            .store(self.dropped_bytes, Ordering::Relaxed);
        to.handed_off.store(self.handed_off, Ordering::Relaxed);
        to.errors.store(self.errors, Ordering::Relaxed);
        to.shed.store(self.shed, Ordering::Relaxed);
        to.checksums_completed
            .store(self.checksums_completed, Ordering::Relaxed);
    }
}

/// The worker's loop and everything it owns.
struct Loop<'a> {
    socket: QueueSocket,
    port: Port,
    settings: WorkerSettings,
    counters: &'a Counters,
    totals: Totals,
    /// The handshakes this worker recorded.
    flows: Flows,
    /// The frames of the batch under way that go to the stack, handed off together once the
    /// batch is classified; as long as a batch, so that it never grows.
    handoffs: Vec<FrameDesc>,
    /// Batch processing times in nanoseconds, 1 ns to 10 s: recording never allocates.
    batches: Histogram<u64>,
    /// When the socket's drop counts are read next, and when the worker last said it sheds.
    next_shed_read: u64,
    shed_logged: Option<(u64, u64)>,
    /// Whether the worker is behind, and when it last said it fell behind.
    overload: Overload,
    behind_logged: Option<u64>,
}

impl<'a> Loop<'a> {
    /// The loop of `socket`, whose frames all go to the kernel's fill ring.
    fn new(
        mut socket: QueueSocket,
        port: Port,
        settings: WorkerSettings,
        counters: &'a Counters,
    ) -> Self {
        let batches = Histogram::new_with_bounds(1, 10_000_000_000, 3)
            .expect("the bounds are valid constants");
        let handoffs = Vec::with_capacity(settings.batch.min(FRAMES as usize));
        // SAFETY: the frames are this socket's own, and none is in use: all go to the kernel.
        unsafe { socket.fill.produce(&socket.frames) };
        Self {
            socket,
            port,
            settings,
            counters,
            totals: Totals::default(),
            flows: Flows::new(),
            handoffs,
            batches,
            next_shed_read: 0,
            shed_logged: None,
            overload: Overload::default(),
            behind_logged: None,
        }
    }

    fn run(mut self) -> Finished {
        let mut batch: Vec<FrameDesc> =
            self.socket.frames[..self.settings.batch.min(FRAMES as usize)].to_vec();
        // Decided once the first frames say which NAPI instance fills the ring.
        let mut waiting = None;
        let mut empty_polls = 0;
        while !self.settings.stop.load(Ordering::Relaxed) {
            // SAFETY: `batch` holds descriptors of this socket's memory; consume overwrites them.
            let received = unsafe { self.socket.rx.consume(&mut batch) };
            let now = coarse_monotonic_ns();
            self.note_batch(received, batch.len(), now);
            if received == 0 {
                empty_polls += 1;
                if waiting == Some(Waiting::BusyPoll) && empty_polls < SPINS_BEFORE_SLEEP {
                    wait::drive_napi(self.socket.rx.fd().as_raw_fd());
                } else {
                    // Sleeps until a frame arrives (and wakes the driver if it asked to be).
                    let _ = self.socket.rx.poll(SLEEP_MS);
                    empty_polls = 0;
                }
                continue;
            }
            empty_polls = 0;
            if waiting.is_none() {
                waiting = Some(self.choose_waiting());
            }
            let start = Instant::now();
            self.process(&mut batch[..received], now);
            // SAFETY: the frames came from this socket's RX ring and are done with.
            unsafe { self.socket.fill.produce(&batch[..received]) };
            if waiting == Some(Waiting::Woken) && self.socket.fill.needs_wakeup() {
                let _ = self.socket.fill.wakeup(self.socket.rx.fd_mut(), 0);
            }
            if now >= self.next_shed_read {
                self.read_shed(now);
            }
            self.totals.publish(self.counters);
            self.batches.saturating_record(duration_ns(start.elapsed()));
        }
        self.read_shed(coarse_monotonic_ns());
        Finished {
            totals: self.totals,
            batches: self.batches,
        }
    }

    /// Tells the redirect program whether the worker is behind, after a batch of `received`
    /// frames of at most `capacity` (0: the ring was empty) at `now`.
    #[inline]
    fn note_batch(&mut self, received: usize, capacity: usize, now: u64) {
        let behind = self.overload.observe(received, capacity, now);
        if let Err(error) = self.settings.behind.set(behind) {
            tracing::warn!(
                queue = self.socket.queue,
                "cannot tell the redirect program whether the worker is behind: {error}"
            );
        } else if behind
            && self
                .behind_logged
                .is_none_or(|logged| now.saturating_sub(logged) >= SHED_LOG_NS)
        {
            tracing::info!(
                queue = self.socket.queue,
                "the worker is behind (full batches one after another): the kernel drops the \
                 frames of other nodes' buckets for it while the flood lasts"
            );
            self.behind_logged = Some(now);
        }
    }

    /// Reads how many frames the kernel shed before the worker, and says so when it sheds,
    /// once every [`SHED_LOG_NS`] at most.
    fn read_shed(&mut self, now: u64) {
        self.next_shed_read = now + SHED_READ_NS;
        let Ok(statistics) = self.socket.rx.fd().xdp_statistics() else {
            return;
        };
        self.totals.shed = statistics.rx_ring_full() + statistics.rx_dropped();
        let (logged_at, logged_shed) = self.shed_logged.unwrap_or((0, 0));
        if self.totals.shed > logged_shed && now.saturating_sub(logged_at) >= SHED_LOG_NS {
            tracing::warn!(
                queue = self.socket.queue,
                shed = self.totals.shed - logged_shed,
                "the worker cannot keep up: the kernel dropped frames at its full ring \
                 (herd_packets_shed_total counts them)"
            );
            self.shed_logged = Some((now, self.totals.shed));
        }
    }

    /// How the worker waits from now on, once frames have come: busy polling where the socket
    /// knows its NAPI instance, woken by the kernel at real-time priority otherwise.
    fn choose_waiting(&self) -> Waiting {
        let queue = self.socket.queue;
        let napi = wait::napi_id(self.socket.rx.fd().as_raw_fd()).unwrap_or(0);
        if self.socket.busy_poll_asked && napi != 0 {
            tracing::info!(
                queue,
                napi,
                "busy polling: the worker runs its queue's NAPI processing itself"
            );
            return Waiting::BusyPoll;
        }
        if self.socket.busy_poll_asked {
            tracing::info!(
                queue,
                "busy polling does not reach this queue (its AF_XDP socket has no NAPI id, as on \
                 veth): the worker is woken by the kernel and sleeps when its ring is empty"
            );
        }
        if let Err(refused) = wait::run_promptly() {
            tracing::warn!(
                queue,
                "real-time scheduling refused ({refused}): the worker runs at nice -20, and \
                 busy NAPI processing on its core may delay it by a time slice"
            );
        }
        Waiting::Woken
    }

    /// Classifies a batch that arrived at `now` and hands the accepted frames to the stack,
    /// all at once.
    #[inline]
    fn process(&mut self, batch: &mut [FrameDesc], now: u64) {
        let table = self.settings.table.load();
        let totals = &mut self.totals;
        let flows = &mut self.flows;
        let handoffs = &mut self.handoffs;
        handoffs.clear();
        totals.received += batch.len() as u64;
        for desc in batch {
            // SAFETY: `desc` came from this socket's RX ring, so it is a frame of this memory
            // that the kernel has finished with and that nothing else touches until it goes
            // back on the fill ring.
            let mut data = unsafe { self.socket.umem.data_mut(desc) };
            let Some((prefix, frame)) = data.contents_mut().split_first_chunk_mut::<PREFIX>()
            else {
                // The redirect program puts the kernel's answer in front of every frame.
                totals.dropped += 1;
                continue;
            };
            let bytes = frame.len() as u64;
            totals.received_bytes += bytes;
            let to_stack = match classify(frame, &table, flows, &Served::from_prefix(*prefix), now)
            {
                Verdict::Accept => {
                    totals.accepted += 1;
                    totals.accepted_bytes += bytes;
                    frame[..6].copy_from_slice(&self.settings.if_mac);
                    true
                }
                // The redirect program keeps these; one reaching a worker goes where the
                // in-kernel mode would send it.
                Verdict::Pass => true,
                Verdict::Drop(_) | Verdict::AnswerNeighbor => {
                    totals.dropped += 1;
                    totals.dropped_bytes += bytes;
                    false
                }
            };
            if to_stack {
                totals.complete_checksum(frame);
                handoffs.push(*desc);
            }
        }
        if handoffs.is_empty() {
            return;
        }
        let umem = &self.socket.umem;
        let sent = self.port.send_batch(handoffs.iter().map(|desc| {
            // SAFETY: as above: a frame of this memory, back on the fill ring only after
            // this batch, and no longer written to.
            let data = unsafe { umem.data(desc) };
            // Only frames longer than the prefix were kept.
            data.contents().get(PREFIX..).unwrap_or_default()
        }));
        totals.handed_off += sent.handed_off;
        totals.errors += sent.refused;
    }
}

/// An error's message followed by its cause's: xsk-rs keeps the system's error as the source.
fn with_source(error: &dyn std::error::Error) -> String {
    match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// The system's error number in `error`'s chain of causes, if any.
fn errno(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    std::iter::successors(Some(error), |error| error.source())
        .find_map(|error| error.downcast_ref::<std::io::Error>()?.raw_os_error())
}

fn duration_ns(duration: Duration) -> u64 {
    duration.as_nanos().try_into().unwrap_or(u64::MAX)
}
