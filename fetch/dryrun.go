package fetch

import (
	"bufio"
	"context"
	"io"
	"mime"
	"net/mail"
	"strings"

	"popsync/fetch/pop3"
)

// What a dry run would do with a message (PlannedMessage.Action).
const (
	PlanFetch  = "fetch"  // new: would be retrieved and delivered
	PlanSkip   = "skip"   // new but over max_size: would be left on the server
	PlanDelete = "delete" // delivered earlier: would be deleted from the server
)

// PlannedMessage is one line of a dry run's listing.
type PlannedMessage struct {
	UIDL          string
	Size          int64
	Action        string // PlanFetch, PlanSkip or PlanDelete
	From, Subject string // from TOP n 0; empty when the server would not say
}

// maxPlanHeader bounds how much of a header section a dry run reads per
// message for From and Subject.
const maxPlanHeader = 64 << 10

// planListing is the dry run's listing of fetchList, skipped and dele,
// with From and Subject of the new messages from TOP n 0 (RFC 1939 §7),
// pipelined. A server without TOP, or a TOP that fails, leaves them empty.
func (p *pollRun) planListing(ctx context.Context, c *pop3.Client, fetchList, skipped, dele []serverMsg) []PlannedMessage {
	var out []PlannedMessage
	byID := make(map[int]int)
	add := func(ms []serverMsg, action string) {
		for _, m := range ms {
			if action != PlanDelete {
				byID[m.id] = len(out)
			}
			out = append(out, PlannedMessage{UIDL: m.key, Size: m.size, Action: action})
		}
	}
	add(fetchList, PlanFetch)
	add(skipped, PlanSkip)
	add(dele, PlanDelete)
	ids := make([]int, 0, len(byID))
	for _, ms := range [][]serverMsg{fetchList, skipped} {
		for _, m := range ms {
			ids = append(ids, m.id)
		}
	}
	if len(ids) == 0 {
		return out
	}
	err := c.TopEach(ctx, ids, 0, func(id int, body io.Reader, err error) error {
		if err != nil {
			return nil // -ERR to TOP: no From and Subject for this one
		}
		i, ok := byID[id]
		if !ok {
			return nil
		}
		out[i].From, out[i].Subject = fromSubject(io.LimitReader(body, maxPlanHeader))
		return nil
	})
	if err != nil {
		p.log.Warn("dry run: reading headers with TOP", "error", err.Error())
	}
	return out
}

// fromSubject reads From and Subject from a header section, decoding RFC
// 2047 encoded words; what cannot be decoded is shown as it is.
func fromSubject(r io.Reader) (from, subject string) {
	msg, err := mail.ReadMessage(bufio.NewReader(io.MultiReader(r, strings.NewReader("\r\n"))))
	if err != nil {
		return "", ""
	}
	dec := new(mime.WordDecoder)
	get := func(k string) string {
		v := msg.Header.Get(k)
		if d, err := dec.DecodeHeader(v); err == nil {
			v = d
		}
		return strings.Join(strings.Fields(v), " ")
	}
	return get("From"), get("Subject")
}
