//! The few system calls std and mio do not offer: passing file descriptors
//! with `SCM_RIGHTS`, writing to a borrowed descriptor, and turning SIGINT and
//! SIGTERM into bytes on a pipe the main loop polls. The only module of the
//! example with `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// At most this many descriptors are taken from one message; the kernel
/// closes the others (`MSG_CTRUNC`).
pub const MAX_FDS_PER_MESSAGE: usize = 8;

/// Bytes for one `SCM_RIGHTS` header (16 bytes on 64-bit Linux, 12 on
/// 32-bit) and `MAX_FDS_PER_MESSAGE` descriptors.
const CMSG_BYTES: usize = 16 + MAX_FDS_PER_MESSAGE * std::mem::size_of::<RawFd>();

/// Room for the control message, aligned as `cmsghdr` needs.
#[repr(C, align(8))]
struct CmsgBuffer([u8; CMSG_BYTES]);

/// Receives bytes from a stream socket, without blocking, and the
/// descriptors that came with them (`SCM_RIGHTS`), close-on-exec.
/// `Ok(0)` is the end of the stream.
pub fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut cmsg = CmsgBuffer([0; CMSG_BYTES]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.0.len() as _;
    // SAFETY: `msg` points at `iov` (describing `buf`, alive and writable for
    // its length) and at `cmsg` (alive, writable, of the length given); both
    // outlive the call.
    let n = unsafe {
        libc::recvmsg(
            socket.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR and CMSG_NXTHDR only
    // return headers inside `msg_control`/`msg_controllen`, which recvmsg
    // set within `cmsg`.
    let mut header = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !header.is_null() {
        // SAFETY: `header` is non-null and inside `cmsg` (see above).
        let h = unsafe { &*header };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is pure arithmetic on a constant.
            let data_len = h.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            let count = data_len / std::mem::size_of::<RawFd>();
            // SAFETY: the header's data lies inside `cmsg`, holds `count`
            // descriptors, and may be unaligned for `RawFd`.
            let data = unsafe { libc::CMSG_DATA(header) }.cast::<RawFd>();
            for i in 0..count {
                // SAFETY: `i < count`, inside the header's data (see above).
                let raw = unsafe { data.add(i).read_unaligned() };
                // SAFETY: the kernel just installed `raw` in this process for
                // us: nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `msg` and `header` are as above.
        header = unsafe { libc::CMSG_NXTHDR(&msg, header) };
    }
    Ok(n as usize)
}

/// Sends `bytes` (not empty) over a stream socket with one descriptor
/// attached (`SCM_RIGHTS`), as `qemu.qmp`'s `send_fd_scm` does. Blocks if the
/// socket does.
pub fn send_with_fd(socket: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    assert!(!bytes.is_empty(), "SCM_RIGHTS needs at least one byte");
    let mut cmsg = CmsgBuffer([0; CMSG_BYTES]);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE is pure arithmetic on a constant.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    assert!(space <= cmsg.0.len());
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg_control` has `space` bytes, room for one header with one
    // descriptor, so CMSG_FIRSTHDR is non-null and points inside `cmsg`.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        libc::CMSG_DATA(header)
            .cast::<RawFd>()
            .write_unaligned(fd.as_raw_fd());
    }
    // SAFETY: `msg` describes `bytes` (only read by sendmsg, despite the
    // `*mut` in iovec) and `cmsg`, both alive for the call.
    let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if (n as usize) < bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"));
    }
    Ok(())
}

/// Puts a descriptor in non-blocking mode (its open file description, shared
/// with whoever else holds it, as QEMU does with passed descriptors).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we borrow; F_GETFL/F_SETFL touch only
    // its status flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes once to a borrowed descriptor: `write(2)`.
pub fn write_fd(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is alive and readable for its length during the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The write end of the signal pipe, for the handler; -1 when none.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; `byte` lives on this stack.
        // The pipe is non-blocking: a full pipe loses the byte, not the
        // signal (one byte already waits).
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// Makes SIGINT and SIGTERM write a byte to a pipe and returns its read end
/// (non-blocking), for the main loop to poll: the self-pipe trick. For the
/// command-line server only: signal dispositions belong to the process.
pub fn signal_pipe() -> io::Result<OwnedFd> {
    let mut ends = [0 as RawFd; 2];
    // SAFETY: `ends` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just made both descriptors; each is owned once here. The
    // write end is kept open for the life of the process (the handler may
    // run at any time), so it is leaked into SIGNAL_PIPE.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(ends[0]), ends[1]) };
    SIGNAL_PIPE.store(write, Ordering::Relaxed);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain data; all-zero means an empty mask and
        // no flags.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: installs a handler that only calls write(2) on a
        // descriptor that stays open; `action` is fully initialised.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(read)
}
