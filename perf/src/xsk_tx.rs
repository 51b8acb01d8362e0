//! An AF_XDP socket that only sends, bound in copy mode to one end of a veth pair: a way
//! back to the stack that `herd-perf handoff` measures against the TAP device and the packet
//! socket. Each frame is copied into the socket's memory, a batch goes on the TX ring, and a
//! `sendto(2)` makes the kernel send it (in copy mode, as socket buffers through the veth).

use std::io::Write as _;
use std::num::NonZeroU32;

use anyhow::Context;
use herd_dataplane::handoff::Sent;
use xsk_rs::config::{BindFlags, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FrameDesc, TxQueue, Umem};

/// Frames of the socket's memory, and the size of its TX and completion rings.
const FRAMES: u32 = 2048;
/// Wake-ups in a row that complete no frame before a batch's remaining frames are given up.
const FUTILE_WAKEUPS: u32 = 1000;

/// The socket, its memory, and which frames of it are free.
pub struct XskTx {
    umem: Umem,
    tx: TxQueue,
    completion: CompQueue,
    /// Frames not on the TX ring nor waiting on the completion ring.
    free: Vec<FrameDesc>,
    /// The batch being sent, and room for what the completion ring gives back.
    batch: Vec<FrameDesc>,
    done: Vec<FrameDesc>,
}

impl XskTx {
    /// A socket on queue 0 of `device`, in the calling thread's namespace.
    pub fn open(device: &str) -> anyhow::Result<Self> {
        let ring = |size| QueueSize::new(size).context("ring sizes are powers of two");
        let umem_config = UmemConfig::builder()
            .fill_queue_size(ring(64)?)
            .comp_queue_size(ring(FRAMES)?)
            .build()
            .context("the AF_XDP memory's settings")?;
        let (umem, free) = Umem::new(
            umem_config,
            NonZeroU32::new(FRAMES).context("FRAMES is not zero")?,
            false,
        )
        .context("cannot create the AF_XDP memory")?;
        let config = SocketConfig::builder()
            .rx_queue_size(ring(64)?)
            .tx_queue_size(ring(FRAMES)?)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP)
            .build();
        let name = device.parse().context("the device name holds a NUL byte")?;
        // SAFETY: the memory is new and used by this one socket.
        let (tx, _rx, rings) = unsafe { xsk_rs::Socket::new(config, &umem, &name, 0) }
            .with_context(|| format!("cannot bind an AF_XDP socket to {device} in copy mode"))?;
        let (_fill, completion) = rings.context("no completion ring for a new memory")?;
        Ok(Self {
            umem,
            tx,
            completion,
            free,
            batch: Vec::with_capacity(FRAMES as usize),
            done: vec![FrameDesc::default(); FRAMES as usize],
        })
    }

    /// Copies `frames` into the socket's memory and sends them, waiting until the kernel has
    /// sent every one (in copy mode it does so inside `sendto(2)`).
    pub fn send_batch<'f>(&mut self, frames: impl IntoIterator<Item = &'f [u8]>) -> Sent {
        let mut sent = Sent::default();
        self.batch.clear();
        for frame in frames {
            let Some(mut desc) = self.free.pop() else {
                sent.refused += 1;
                continue;
            };
            // SAFETY: a free frame is on no ring, so nothing else reads or writes it.
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            let mut cursor = data.cursor();
            cursor.set_pos(0);
            if cursor.write_all(frame).is_err() {
                self.free.push(desc);
                sent.refused += 1;
                continue;
            }
            self.batch.push(desc);
        }
        // SAFETY: the frames are this memory's, free until now, and written above.
        let queued = unsafe { self.tx.produce(&self.batch) };
        sent.refused += (self.batch.len() - queued) as u64;
        self.free.extend_from_slice(&self.batch[queued..]);
        let (mut completed, mut futile) = (0, 0);
        while completed < queued && futile < FUTILE_WAKEUPS {
            // The kernel sends a few dozen frames per call in copy mode.
            if self.tx.wakeup().is_err() {
                break;
            }
            // SAFETY: `done` holds plain descriptors for the ring to overwrite.
            let count = unsafe { self.completion.consume(&mut self.done) };
            self.free.extend_from_slice(&self.done[..count]);
            completed += count;
            futile = if count == 0 { futile + 1 } else { 0 };
        }
        sent.handed_off += completed as u64;
        sent.refused += (queued - completed) as u64;
        sent
    }
}
