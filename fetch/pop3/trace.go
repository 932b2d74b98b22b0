package pop3

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

const redacted = "<redacted>"

func (c *Client) tracing(ctx context.Context, level slog.Level) bool {
	return c.log != nil && c.log.Enabled(ctx, level)
}

// traceSend logs a command line. Credentials are replaced by "<redacted>"
// unless TraceAuth is set and LevelTraceAuth is enabled; then the line is
// logged in full at that level instead.
func (c *Client) traceSend(ctx context.Context, cmd command) {
	if c.log == nil {
		return
	}
	arg := cmd.arg
	level := LevelTrace
	if cmd.secret {
		if c.opts.TraceAuth && c.tracing(ctx, LevelTraceAuth) {
			level = LevelTraceAuth
		} else {
			arg = cmd.public
		}
	}
	if !c.tracing(ctx, level) {
		return
	}
	var b strings.Builder
	b.WriteString(cmd.verb)
	if arg != "" {
		if cmd.verb != "" {
			b.WriteByte(' ')
		}
		b.WriteString(arg)
	}
	if cmd.a >= 0 {
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(cmd.a))
		if cmd.b >= 0 {
			b.WriteByte(' ')
			b.WriteString(strconv.Itoa(cmd.b))
		}
	}
	c.log.LogAttrs(ctx, level, "pop3 send", slog.String("line", b.String()))
}

func (c *Client) traceRecv(ctx context.Context, line []byte) {
	if !c.tracing(ctx, LevelTrace) {
		return
	}
	c.log.LogAttrs(ctx, LevelTrace, "pop3 recv", slog.String("line", string(line)))
}

func (c *Client) traceBody(ctx context.Context, cmd command, n int64) {
	if ctx == nil || !c.tracing(ctx, LevelTrace) {
		return
	}
	c.log.LogAttrs(ctx, LevelTrace, "pop3 recv body",
		slog.String("cmd", cmd.verb), slog.Int("n", cmd.a), slog.Int64("bytes", n))
}

func (c *Client) tracef(ctx context.Context, format string, args ...any) {
	if !c.tracing(ctx, LevelTrace) {
		return
	}
	c.log.LogAttrs(ctx, LevelTrace, "pop3 "+fmt.Sprintf(format, args...))
}
