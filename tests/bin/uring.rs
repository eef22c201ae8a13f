//! Just enough io_uring for the test peer: one ring, one request at a time, accept and connect. Raw
//! syscalls and mmaps (the layouts are the kernel's uapi, unchanged since 5.1), so the peer makes its
//! accepts and connects as an io_uring server does, with no accept() or connect() syscall.
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::libc;

const IORING_OP_ACCEPT: u8 = 13;
const IORING_OP_CONNECT: u8 = 16;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_OFF_SQ_RING: i64 = 0;
const IORING_OFF_CQ_RING: i64 = 0x800_0000;
const IORING_OFF_SQES: i64 = 0x1000_0000;

#[repr(C)]
#[derive(Default)]
struct SqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    resv2: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    resv2: u64,
}

#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
}

/// struct io_uring_sqe, with the fields accept and connect use.
#[repr(C)]
#[derive(Default)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    op_flags: u32,
    user_data: u64,
    buf_index: u16,
    personality: u16,
    splice_fd_in: i32,
    pad: [u64; 2],
}

#[repr(C)]
struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, offset: i64) -> io::Result<Mapping> {
        // SAFETY: a shared mapping of the ring fd at an offset the kernel defines; unmapped on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    /// The u32 the kernel shares at `offset`.
    fn word(&self, offset: u32) -> &AtomicU32 {
        assert!(offset as usize + 4 <= self.len);
        // SAFETY: in bounds and 4-byte aligned (the kernel's offsets are), shared with the kernel.
        unsafe { &*(self.ptr.add(offset as usize) as *const AtomicU32) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

pub struct Ring {
    fd: RawFd,
    params: Params,
    sq: Mapping,
    cq: Mapping,
    sqes: Mapping,
}

impl Ring {
    pub fn new() -> io::Result<Ring> {
        let mut params = Params::default();
        // SAFETY: io_uring_setup(2) with a valid params struct.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &mut params as *mut Params) } as RawFd;
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sq_len = params.sq_off.array as usize + params.sq_entries as usize * 4;
        let cq_len = params.cq_off.cqes as usize + params.cq_entries as usize * std::mem::size_of::<Cqe>();
        let sq = Mapping::new(fd, sq_len, IORING_OFF_SQ_RING)?;
        let cq = Mapping::new(fd, cq_len, IORING_OFF_CQ_RING)?;
        let sqes = Mapping::new(fd, params.sq_entries as usize * std::mem::size_of::<Sqe>(), IORING_OFF_SQES)?;
        Ok(Ring { fd, params, sq, cq, sqes })
    }

    /// Submits one request and waits for its completion; returns its result (an fd, 0, or -errno).
    fn run(&mut self, sqe: Sqe) -> i32 {
        let off = &self.params.sq_off;
        let tail = self.sq.word(off.tail).load(Ordering::Acquire);
        let index = tail & self.sq.word(off.ring_mask).load(Ordering::Relaxed);
        // SAFETY: index < sq_entries; the slot is ours until the tail moves past it.
        unsafe { (self.sqes.ptr as *mut Sqe).add(index as usize).write(sqe) };
        self.sq.word(off.array + index * 4).store(index, Ordering::Relaxed);
        self.sq.word(off.tail).store(tail.wrapping_add(1), Ordering::Release);
        loop {
            // SAFETY: io_uring_enter(2): submit one, wait for one.
            let rc = unsafe {
                libc::syscall(libc::SYS_io_uring_enter, self.fd, 1u32, 1u32, IORING_ENTER_GETEVENTS, 0usize, 0usize)
            };
            if rc >= 0 {
                break;
            }
            let err = io::Error::last_os_error();
            assert_eq!(err.kind(), io::ErrorKind::Interrupted, "io_uring_enter: {err}");
        }
        let off = &self.params.cq_off;
        let head = self.cq.word(off.head).load(Ordering::Acquire);
        assert_ne!(head, self.cq.word(off.tail).load(Ordering::Acquire), "io_uring_enter returned no completion");
        let index = head & self.cq.word(off.ring_mask).load(Ordering::Relaxed);
        // SAFETY: index < cq_entries, the entry the kernel published before moving the tail.
        let cqe = unsafe { (self.cq.ptr.add(off.cqes as usize) as *const Cqe).add(index as usize).read() };
        self.cq.word(off.head).store(head.wrapping_add(1), Ordering::Release);
        cqe.res
    }

    /// IORING_OP_ACCEPT on a listening socket: the new fd, or the error.
    pub fn accept(&mut self, listener: RawFd) -> io::Result<RawFd> {
        let sqe = Sqe {
            opcode: IORING_OP_ACCEPT,
            fd: listener,
            op_flags: libc::SOCK_CLOEXEC as u32,
            user_data: 1,
            ..Default::default()
        };
        result(self.run(sqe))
    }

    /// IORING_OP_CONNECT of `fd` to the address `sa` of `len` bytes.
    pub fn connect(&mut self, fd: RawFd, sa: *const libc::sockaddr, len: libc::socklen_t) -> io::Result<()> {
        let sqe =
            Sqe { opcode: IORING_OP_CONNECT, fd, addr: sa as u64, off: len as u64, user_data: 2, ..Default::default() };
        result(self.run(sqe)).map(|_| ())
    }
}

// SAFETY: the ring is used by one thread at a time (it moves to the thread that submits on it); the
// mappings are plain shared memory.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: our ring fd.
        unsafe { libc::close(self.fd) };
    }
}

fn result(res: i32) -> io::Result<RawFd> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res)
    }
}
