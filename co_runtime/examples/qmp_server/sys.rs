//! The few system calls std and mio do not offer, through `rustix`:
//! passing file descriptors with `SCM_RIGHTS`, writing to a borrowed
//! descriptor, and non-blocking mode for a passed one. No `unsafe` here:
//! rustix hands received descriptors over as `OwnedFd`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// At most this many descriptors are taken from one message; the kernel
/// closes the others (`MSG_CTRUNC`).
pub const MAX_FDS_PER_MESSAGE: usize = 8;

/// Receives bytes from a stream socket, without blocking, and the
/// descriptors that came with them (`SCM_RIGHTS`), close-on-exec.
/// `Ok(0)` is the end of the stream.
pub fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    )?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok(msg.bytes)
}

/// Sends `bytes` (not empty) over a stream socket with one descriptor
/// attached (`SCM_RIGHTS`), as `qemu.qmp`'s `send_fd_scm` does. Blocks if the
/// socket does.
pub fn send_with_fd(socket: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    assert!(!bytes.is_empty(), "SCM_RIGHTS needs at least one byte");
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("no room for the SCM_RIGHTS message"));
    }
    let n = sendmsg(
        socket,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if n < bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"));
    }
    Ok(())
}

/// Puts a descriptor in non-blocking mode (its open file description, shared
/// with whoever else holds it, as QEMU does with passed descriptors).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = fcntl_getfl(fd)?;
    fcntl_setfl(fd, flags | OFlags::NONBLOCK)?;
    Ok(())
}

/// Writes once to a borrowed descriptor: `write(2)`.
pub fn write_fd(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    Ok(rustix::io::write(fd, bytes)?)
}
