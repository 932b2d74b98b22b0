package deliver

import (
	"bytes"
	"io"
)

// crlfWriter passes bytes on to w with every CR that is not followed by LF
// turned into CRLF; nothing else changes. It sits in front of the dot
// writer of the SMTP and LMTP targets (net/textproto), which turns a bare
// LF into CRLF and dot-stuffs only at the start of a line it knows: after
// its own CRLF. A bare CR would otherwise reach the server as is, and
// "\r.\r\n" would be a line "." to an MTA that ends lines at CR, the SMTP
// smuggling class (RFC 5321 §2.3.8: CR and LF appear only together, as a
// line end, and §4.5.2 for the dot-stuffing the next layer does).
//
// The CR is passed on at once; a CR that ends one Write is only known to
// be bare when the next byte arrives, so the LF it may need is decided
// then, or in Flush.
type crlfWriter struct {
	w  io.Writer
	cr bool // the last byte passed on was a CR
}

var lfByte = []byte{'\n'}

func (c *crlfWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.cr {
		c.cr = false
		if p[0] != '\n' {
			if _, err := c.w.Write(lfByte); err != nil {
				return 0, err
			}
		}
	}
	seg := 0 // p[seg:] has not been passed on yet
	for off := 0; ; {
		i := bytes.IndexByte(p[off:], '\r')
		if i < 0 {
			break
		}
		i += off
		if i == len(p)-1 {
			c.cr = true
			break
		}
		if p[i+1] != '\n' {
			if _, err := c.w.Write(p[seg : i+1]); err != nil {
				return seg, err
			}
			if _, err := c.w.Write(lfByte); err != nil {
				return i + 1, err
			}
			seg = i + 1
		}
		off = i + 1
	}
	if _, err := c.w.Write(p[seg:]); err != nil {
		return seg, err
	}
	return len(p), nil
}

// Flush ends a CR left at the end of the message with its LF.
func (c *crlfWriter) Flush() error {
	if !c.cr {
		return nil
	}
	c.cr = false
	_, err := c.w.Write(lfByte)
	return err
}
