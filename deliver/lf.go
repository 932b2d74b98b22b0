package deliver

import (
	"bytes"
	"io"
)

// lfWriter passes bytes on to w with every CRLF turned into LF; a CR that
// is not followed by LF is kept, and nothing else changes. It scans whole
// chunks for CR rather than working line by line.
//
// A CR that ends one Write may be the first half of a CRLF split across two
// Writes, so it is held back until the next byte is seen (or until Flush).
type lfWriter struct {
	w  io.Writer
	cr bool  // a CR ended the previous Write and has not been passed on
	n  int64 // bytes passed on to w
}

var crByte = []byte{'\r'}

// Write converts p and reports how much of p was consumed.
func (c *lfWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.cr {
		if p[0] != '\n' {
			// The held CR was a lone one: it stays.
			if err := c.emit(crByte); err != nil {
				return 0, err
			}
		}
		// Otherwise it was the CR of a CRLF and is dropped: the LF that
		// opens p is written below as ordinary data.
		c.cr = false
	}
	seg := 0 // p[seg:] has not been passed on yet
	for off := 0; ; {
		i := bytes.IndexByte(p[off:], '\r')
		if i < 0 {
			break
		}
		i += off
		if i == len(p)-1 {
			if err := c.emit(p[seg:i]); err != nil {
				return seg, err
			}
			c.cr = true
			return len(p), nil
		}
		if p[i+1] == '\n' {
			// Drop the CR; the LF starts the next segment.
			if err := c.emit(p[seg:i]); err != nil {
				return seg, err
			}
			seg = i + 1
		}
		off = i + 1
	}
	if err := c.emit(p[seg:]); err != nil {
		return seg, err
	}
	return len(p), nil
}

// Flush passes on a CR held back at the end of the last Write: at the end
// of the message it is a lone CR.
func (c *lfWriter) Flush() error {
	if !c.cr {
		return nil
	}
	c.cr = false
	return c.emit(crByte)
}

func (c *lfWriter) emit(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	return err
}
