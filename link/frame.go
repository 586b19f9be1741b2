// Package link is the protocol between the enclave and its parent, the EC2
// host: every message that crosses the trust boundary is a frame defined
// here. Frames are versioned and length-prefixed, and each type has a size
// cap that is checked before its payload is read. Over one connection
// (vsock in production, a unix socket or TCP on 127.0.0.1 in dev mode and
// tests) a Session multiplexes streams with per-stream flow control; a
// stream is opened for one service (egress dial, ingress, blob put/get,
// metadata, log) and then carries bytes both ways. The package does no I/O
// of its own: it is handed the connection, which package link/linknet
// listens for and dials.
//
// Both sides use it. The enclave treats everything the parent sends as
// hostile: a frame that breaks the protocol (bad version, unknown type,
// over its cap, truncated, a stream opened twice or out of order, data
// beyond the granted credit) ends the session, and the enclave dials
// again. The parent learns nothing from the protocol but what the enclave
// chooses to send through it: egress carries TLS, blobs are encrypted.
package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the protocol version every frame carries.
const Version = 1

// Type is a frame's type.
type Type uint8

// Frame types.
const (
	THello  Type = 1 + iota // first frame of each side: its role
	TOpen                   // open a stream: service byte + argument
	TAccept                 // the stream is open
	TRefuse                 // the stream was refused: reason
	TData                   // stream bytes
	TCredit                 // the receiver grants more bytes (uint32)
	TClose                  // the sender will send no more data (FIN)
	TReset                  // the stream is aborted: reason
	TPing                   // liveness: echoed as TPong
	TPong
)

func (t Type) String() string {
	names := [...]string{"", "hello", "open", "accept", "refuse", "data", "credit", "close", "reset", "ping", "pong"}
	if int(t) < len(names) && t != 0 {
		return names[t]
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// MaxData is the largest data payload; writes are split into such frames.
const MaxData = 32 << 10

// maxPayload caps each type's payload.
var maxPayload = [...]uint32{
	THello: 16, TOpen: 1 + MaxArg, TAccept: 0, TRefuse: MaxReason, TData: MaxData,
	TCredit: 4, TClose: 0, TReset: MaxReason, TPing: 8, TPong: 8,
}

// MaxArg bounds a stream's argument (a host:port, a blob name); MaxReason
// a refusal's or reset's text.
const (
	MaxArg    = 512
	MaxReason = 256
)

// HeaderLen is the size of a frame header: version, type, stream id,
// payload length.
const HeaderLen = 10

// Frame is one message.
type Frame struct {
	Type    Type
	Stream  uint32
	Payload []byte
}

// ProtocolError is a frame or sequence of frames the protocol forbids.
type ProtocolError struct{ Msg string }

func (e *ProtocolError) Error() string { return "link: " + e.Msg }

func protocolErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// IsProtocolError says whether err is a protocol violation (as opposed to
// the connection failing).
func IsProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

// ReadFrame reads one frame into buf (which must hold MaxData bytes; the
// payload aliases it). A bad version, an unknown type or a length over the
// type's cap is refused before the payload is read; a connection that ends
// inside a frame gives io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, buf []byte) (Frame, error) {
	var h [HeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	f, n, err := parseHeader(h[:])
	if err != nil {
		return Frame{}, err
	}
	if int(n) > len(buf) {
		return Frame{}, protocolErr("buffer of %d bytes for a %d-byte payload", len(buf), n)
	}
	f.Payload = buf[:n]
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return f, nil
}

func parseHeader(h []byte) (Frame, uint32, error) {
	if h[0] != Version {
		return Frame{}, 0, protocolErr("version %d, want %d", h[0], Version)
	}
	t := Type(h[1])
	if t == 0 || int(t) >= len(maxPayload) {
		return Frame{}, 0, protocolErr("unknown frame %s", t)
	}
	n := binary.BigEndian.Uint32(h[6:10])
	if n > maxPayload[t] {
		return Frame{}, 0, protocolErr("%s frame of %d bytes (at most %d)", t, n, maxPayload[t])
	}
	return Frame{Type: t, Stream: binary.BigEndian.Uint32(h[2:6])}, n, nil
}

// AppendFrame appends f's encoding to dst. It refuses a payload over the
// type's cap, so a sender cannot produce what a receiver must refuse.
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	if f.Type == 0 || int(f.Type) >= len(maxPayload) {
		return dst, protocolErr("unknown frame %s", f.Type)
	}
	if uint32(len(f.Payload)) > maxPayload[f.Type] || len(f.Payload) > 1<<31 {
		return dst, protocolErr("%s frame of %d bytes (at most %d)", f.Type, len(f.Payload), maxPayload[f.Type])
	}
	dst = append(dst, Version, byte(f.Type))
	dst = binary.BigEndian.AppendUint32(dst, f.Stream)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(f.Payload)))
	return append(dst, f.Payload...), nil
}
