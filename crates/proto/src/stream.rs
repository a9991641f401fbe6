//! TCP stream framing (§1.1): every OpenVPN packet on a TCP connection is
//! preceded by a big-endian `u16` that counts the bytes after it. OpenVPN
//! 2.6 treats a length of 0, or one larger than its receive buffer, as a
//! fatal stream error and restarts the connection; so does [`Deframer`].
//!
//! [`Deframer`] cuts packets out of whatever the socket returned: many
//! packets from one large read, a packet split over several reads. Its
//! buffer is allocated once, with room for one read chunk plus one maximal
//! packet; the caller reads straight into [`Deframer::space`] and the
//! packets are handed out as slices of that buffer (no copy, except moving
//! the unfinished tail of a read to the front, at most one packet). A peer
//! that announces a 65535-byte packet and stalls costs this one buffer,
//! nothing more.
//!
//! Packet-id checks are the same as over UDP: 2.6 uses its replay window
//! (`replay-window`, default 64) on TCP too, not a strictly sequential check.

use thiserror::Error;

/// Bytes of the length prefix in front of every packet.
pub const PREFIX_LEN: usize = 2;
/// Largest packet a length prefix can announce.
pub const MAX_FRAMED_PACKET: usize = u16::MAX as usize;

/// Why the stream cannot go on; the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StreamError {
    #[error("the peer announced a packet of length 0")]
    ZeroLength,
    #[error("the peer announced a packet of {len} bytes (at most {max} allowed)")]
    TooLong { len: usize, max: usize },
}

/// The length prefix for a packet of `len` bytes; `None` when `len` is 0 or
/// does not fit in 16 bits (such a packet cannot be sent over TCP).
pub fn prefix(len: usize) -> Option<[u8; PREFIX_LEN]> {
    if len == 0 {
        return None;
    }
    u16::try_from(len).ok().map(u16::to_be_bytes)
}

/// Cuts a TCP byte stream into packets.
#[derive(Debug)]
pub struct Deframer {
    buf: Box<[u8]>,
    /// First unconsumed byte.
    start: usize,
    /// End of the bytes received.
    end: usize,
    /// Largest packet accepted.
    max_packet: usize,
    /// Set once the stream broke; every later call reports it again.
    failed: Option<StreamError>,
}

impl Deframer {
    /// A deframer accepting packets up to `max_packet` bytes (at most
    /// [`MAX_FRAMED_PACKET`]); reads of up to `chunk` bytes fit its buffer
    /// next to an unfinished packet.
    pub fn new(max_packet: usize, chunk: usize) -> Self {
        let max_packet = max_packet.clamp(1, MAX_FRAMED_PACKET);
        Deframer {
            buf: vec![0; PREFIX_LEN + max_packet + chunk.max(1)].into_boxed_slice(),
            start: 0,
            end: 0,
            max_packet,
            failed: None,
        }
    }

    /// Accept packets up to `max_packet` from now on, with reads of up to
    /// `chunk` bytes: a server raises the limit once a connection's client
    /// authenticated (before that only control packets are valid). The
    /// bytes received so far are kept.
    pub fn resize(&mut self, max_packet: usize, chunk: usize) {
        let max_packet = max_packet.clamp(1, MAX_FRAMED_PACKET);
        let len = (PREFIX_LEN + max_packet + chunk.max(1)).max(self.buffered());
        let mut buf = vec![0; len].into_boxed_slice();
        buf[..self.buffered()].copy_from_slice(&self.buf[self.start..self.end]);
        self.end = self.buffered();
        self.start = 0;
        self.buf = buf;
        self.max_packet = max_packet;
    }

    /// The largest packet accepted.
    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    /// Where the next read goes: never empty while the stream is healthy.
    /// The unconsumed bytes move to the front first when that makes room.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written to the front of [`Deframer::space`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Bytes received but not yet handed out as packets.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next complete packet, `Ok(None)` when more bytes are needed.
    /// After an error the stream is useless: close the connection.
    pub fn next_packet(&mut self) -> Result<Option<&[u8]>, StreamError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let have = &self.buf[self.start..self.end];
        let Some(head) = have.get(..PREFIX_LEN) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if len == 0 {
            return Err(*self.failed.insert(StreamError::ZeroLength));
        }
        if len > self.max_packet {
            return Err(*self.failed.insert(StreamError::TooLong {
                len,
                max: self.max_packet,
            }));
        }
        if have.len() < PREFIX_LEN + len {
            return Ok(None);
        }
        let at = self.start + PREFIX_LEN;
        self.start = at + len;
        Ok(Some(&self.buf[at..at + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut s = Vec::new();
        for p in packets {
            s.extend_from_slice(&prefix(p.len()).unwrap());
            s.extend_from_slice(p);
        }
        s
    }

    /// Feed `stream` in reads of at most `read` bytes; collect the packets.
    fn cut(d: &mut Deframer, stream: &[u8], read: usize) -> Result<Vec<Vec<u8>>, StreamError> {
        let mut got = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let space = d.space();
            assert!(!space.is_empty(), "no room to read into");
            let n = space.len().min(read).min(stream.len() - at);
            space[..n].copy_from_slice(&stream[at..at + n]);
            d.filled(n);
            at += n;
            while let Some(p) = d.next_packet()? {
                got.push(p.to_vec());
            }
        }
        Ok(got)
    }

    #[test]
    fn many_packets_come_out_of_one_read() {
        let packets: Vec<Vec<u8>> = (1..=100u8).map(|i| vec![i; usize::from(i) * 7]).collect();
        let stream = framed(&packets);
        let mut d = Deframer::new(2048, stream.len());
        assert_eq!(cut(&mut d, &stream, stream.len()).unwrap(), packets);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_packet_split_over_reads_of_one_byte_is_reassembled() {
        let packets = vec![vec![0x38; 1500], vec![0x48; 1]];
        let stream = framed(&packets);
        let mut d = Deframer::new(1600, 64);
        assert_eq!(cut(&mut d, &stream, 1).unwrap(), packets);
    }

    #[test]
    fn zero_and_oversized_lengths_break_the_stream_for_good() {
        let mut d = Deframer::new(100, 64);
        assert_eq!(cut(&mut d, &[0, 0, 1], 64), Err(StreamError::ZeroLength));
        assert_eq!(d.next_packet(), Err(StreamError::ZeroLength));
        let mut d = Deframer::new(100, 64);
        let err = StreamError::TooLong { len: 101, max: 100 };
        assert_eq!(cut(&mut d, &[0, 101], 64), Err(err));
        assert_eq!(d.next_packet(), Err(err));
        // The limit itself is fine.
        let mut d = Deframer::new(100, 64);
        assert_eq!(
            cut(&mut d, &framed(&[vec![9; 100]]), 64).unwrap(),
            vec![vec![9; 100]]
        );
    }

    /// A peer announcing 65535 bytes and then stalling holds exactly the one
    /// buffer: reads keep finding room until the packet would be complete.
    #[test]
    fn a_stalled_maximal_packet_fits_the_buffer() {
        let mut d = Deframer::new(MAX_FRAMED_PACKET, 4096);
        let mut stream = vec![0xff, 0xff];
        stream.resize(PREFIX_LEN + MAX_FRAMED_PACKET - 1, 7);
        assert!(cut(&mut d, &stream, 4096).unwrap().is_empty());
        assert_eq!(d.buffered(), stream.len());
        assert!(!d.space().is_empty());
    }

    #[test]
    fn resize_keeps_the_unfinished_packet() {
        let mut d = Deframer::new(16, 8);
        let stream = framed(&[vec![1; 10], vec![2; 500]]);
        // The first packet and one byte of the next one's length.
        let mut got = cut(&mut d, &stream[..13], 8).unwrap();
        d.resize(1000, 4096);
        assert_eq!(d.max_packet(), 1000);
        got.extend(cut(&mut d, &stream[13..], 4096).unwrap());
        assert_eq!(got, vec![vec![1; 10], vec![2; 500]]);
    }

    #[test]
    fn prefix_refuses_what_cannot_be_framed() {
        assert_eq!(prefix(0), None);
        assert_eq!(prefix(1), Some([0, 1]));
        assert_eq!(prefix(65_535), Some([0xff, 0xff]));
        assert_eq!(prefix(65_536), None);
    }

    proptest! {
        #[test]
        fn any_read_sizes_give_back_the_packets(
            packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..40),
            read in 1usize..700,
            chunk in 1usize..1000,
        ) {
            let stream = framed(&packets);
            let mut d = Deframer::new(300, chunk);
            prop_assert_eq!(cut(&mut d, &stream, read).unwrap(), packets);
            prop_assert_eq!(d.buffered(), 0);
        }
    }
}
