//! The protocol between the process that owns a bus directory and the
//! processes that join it (docs/PROCESSES.md): the owner serves the bus
//! over a Unix socket in the directory (`src/serve/`), a joined process
//! calls it through the joined backend (`src/remote/`). Backend-free
//! and I/O-free but for reading and writing whole messages, so every
//! decoder can be fuzzed on raw bytes (`fuzzing::wire`).
//!
//! On the socket, each message is `len u32 | call u64 | kind u8 | body`,
//! `len` counting what follows it. A connection opens with a hello each
//! way ([`hello`], [`check_hello`]): a process of another protocol or
//! format version is refused with a clear error before anything else is
//! read. Then the joined process sends requests (`kind` [`REQUEST`]) and
//! the owner answers each, in any order, with the request's `call`
//! number (`kind` [`ANSWER`]).
//!
//! Invariants: every length is checked before it is trusted (a message
//! larger than [`MAX_MESSAGE_BYTES`] is refused before any allocation);
//! a message that does not decode ends the connection, never the
//! process.

mod codec;
mod message;
pub(crate) mod socket;
mod types;

use std::io::{self, Read, Write};

use bytes::Bytes;

pub(crate) use codec::{Dec, Decoded, Enc, OwnedRecord, WireError};
pub(crate) use message::{Handed, Handle, Request, Response, SubState};
pub(crate) use types::Wait;

use crate::error::{Error, Result};
use crate::format::FORMAT_VERSION;
use crate::log::SEGMENT_BYTES_MAX;

/// How errors about the other side name it.
pub(crate) const OWNER: &str = "owner process";

/// The protocol's version: both sides must speak the same.
pub(crate) const PROTOCOL_VERSION: u16 = 2;
const MAGIC: [u8; 4] = *b"LBUS";
/// A message's upper bound: the largest batch (a whole segment) and room
/// for its framing.
pub(crate) const MAX_MESSAGE_BYTES: usize = SEGMENT_BYTES_MAX as usize + (1 << 20);

/// A request from a joined process.
pub(crate) const REQUEST: u8 = 1;
/// An answer from the owner: `ok u8`, then a [`Response`] or an error.
pub(crate) const ANSWER: u8 = 2;

/// Writes one message, with one write.
pub(crate) fn write_message(out: &mut impl Write, call: u64, kind: u8, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(8 + 1 + body.len()).map_err(|_| io::Error::other("message too large"))?;
    let mut message = Vec::with_capacity(4 + len as usize);
    message.extend_from_slice(&len.to_le_bytes());
    message.extend_from_slice(&call.to_le_bytes());
    message.push(kind);
    message.extend_from_slice(body);
    out.write_all(&message)
}

/// Reads one message: its call number, kind and body.
pub(crate) fn read_message(input: &mut impl Read) -> io::Result<(u64, u8, Bytes)> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if !(9..=MAX_MESSAGE_BYTES).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message length out of range",
        ));
    }
    let mut message = vec![0u8; len];
    input.read_exact(&mut message)?;
    let call = u64::from_le_bytes(message[..8].try_into().unwrap_or_default());
    let kind = message[8];
    Ok((call, kind, Bytes::from(message).slice(9..)))
}

/// This process's hello: magic, protocol and format versions, pid.
pub(crate) fn hello() -> Vec<u8> {
    let mut enc = Enc::default();
    enc.buf.extend_from_slice(&MAGIC);
    enc.u16(PROTOCOL_VERSION)
        .u16(FORMAT_VERSION)
        .u32(std::process::id());
    enc.buf
}

/// Checks the other side's hello; its pid.
pub(crate) fn check_hello(body: Bytes) -> Result<u32> {
    let mut dec = Dec::new(body);
    let magic = [dec.u8(), dec.u8(), dec.u8(), dec.u8()];
    let versions = (dec.u16(), dec.u16(), dec.u32());
    let refused = |message: String| Error::Unavailable {
        backend: OWNER,
        message,
    };
    match (magic, versions) {
        ([Ok(a), Ok(b), Ok(c), Ok(d)], (Ok(protocol), Ok(format), Ok(pid))) if [a, b, c, d] == MAGIC => {
            if protocol != PROTOCOL_VERSION || format != FORMAT_VERSION {
                return Err(refused(format!(
                    "process {pid} speaks protocol {protocol} with format {format}; this process speaks \
                     protocol {PROTOCOL_VERSION} with format {FORMAT_VERSION}: run one logbus version per bus directory"
                )));
            }
            Ok(pid)
        }
        _ => Err(refused(
            "the bus socket answered with something that is not logbus".into(),
        )),
    }
}

/// An answer's body: `1` and the response, or `0` and the error.
pub(crate) fn encode_answer(answer: &Result<Response>) -> Vec<u8> {
    let mut enc = Enc::default();
    match answer {
        Ok(response) => response.encode(enc.u8(1)),
        Err(error) => put_error(enc.u8(0), error),
    }
    enc.buf
}

/// Decodes an answer's body.
pub(crate) fn decode_answer(body: Bytes) -> Decoded<Result<Response>> {
    let mut dec = Dec::new(body);
    match dec.bool()? {
        true => Response::decode(&mut dec).map(Ok),
        false => {
            let error = get_error(&mut dec)?;
            dec.finish()?;
            Ok(Err(error))
        }
    }
}

/// Errors travel as the variants a caller matches on; any other is
/// [`Error::Backend`] with its message.
fn put_error(enc: &mut Enc, error: &Error) {
    match error {
        Error::Io(io) => {
            enc.u8(1)
                .u32(io.raw_os_error().unwrap_or(0) as u32)
                .str(&io.to_string());
        }
        Error::Locked(path) => {
            enc.u8(2).str(&path.to_string_lossy());
        }
        Error::Poisoned { cause } => {
            enc.u8(3).str(cause);
        }
        Error::RecordTooLarge { size, max } => {
            enc.u8(4).u64(*size).u64(*max);
        }
        Error::InvalidArgument(message) => {
            enc.u8(5).str(message);
        }
        Error::LeaseExpired { offset } => {
            enc.u8(6).u64(*offset);
        }
        Error::Timeout { correlation_id } => {
            enc.u8(7).u128(*correlation_id);
        }
        Error::Closed => {
            enc.u8(8);
        }
        // An owner's error that was itself relayed: its message as it is.
        Error::Backend {
            backend: OWNER,
            message,
        } => {
            enc.u8(0).str(message);
        }
        other => {
            enc.u8(0).str(&other.to_string());
        }
    }
}

fn get_error(dec: &mut Dec) -> Decoded<Error> {
    Ok(match dec.u8()? {
        0 => Error::Backend {
            backend: OWNER,
            message: dec.string()?,
        },
        1 => {
            let code = dec.u32()? as i32;
            let message = dec.string()?;
            match code {
                0 => Error::Io(io::Error::other(message)),
                code => Error::Io(io::Error::from_raw_os_error(code)),
            }
        }
        2 => Error::Locked(dec.string()?.into()),
        3 => Error::Poisoned { cause: dec.string()? },
        4 => Error::RecordTooLarge {
            size: dec.u64()?,
            max: dec.u64()?,
        },
        5 => Error::InvalidArgument(dec.string()?),
        6 => Error::LeaseExpired { offset: dec.u64()? },
        7 => Error::Timeout {
            correlation_id: dec.u128()?,
        },
        8 => Error::Closed,
        _ => return Err(WireError("unknown error")),
    })
}

impl From<WireError> for Error {
    fn from(error: WireError) -> Error {
        Error::Backend {
            backend: OWNER,
            message: format!("malformed message: {}", error.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_of_another_version_is_refused_naming_both() {
        assert_eq!(check_hello(hello().into()).unwrap(), std::process::id());
        let mut theirs = hello();
        theirs[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        let error = check_hello(theirs.into()).unwrap_err().to_string();
        let (them, us) = (PROTOCOL_VERSION + 1, PROTOCOL_VERSION);
        assert!(
            error.contains(&format!("protocol {them}")) && error.contains(&format!("protocol {us}")),
            "{error}"
        );
        assert!(check_hello(Bytes::from_static(b"GET / HTTP/1.1")).is_err());
    }

    #[test]
    fn a_message_longer_than_the_bound_is_refused_before_it_is_read() {
        let mut input: &[u8] = &u32::MAX.to_le_bytes();
        let error = read_message(&mut input).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
