package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"popsync/fetch/pop3"
	"popsync/state"
)

// listedLimit is the most a message LIST announced as size octets may
// bring: twice that (a server counting LF-only lines still stays below)
// and 1 MiB of slack. More is a hostile or broken server, and stopping it
// keeps an endless message from filling the disk when max_size is unset.
// The least is pop3.MinOctets, which the client checks itself
// (RetrEachListed), since a short message is a framing doubt that must
// end the session without QUIT.
func listedLimit(size int64) int64 {
	return 2*max(size, 0) + 1<<20
}

// serverMsg is one message as the server lists it, with the key it has in
// the seen-set.
type serverMsg struct {
	id   int
	size int64
	key  string
}

// listMessages returns every message on the server with its seen-set key:
// the UIDL, or a digest of its headers when the server has no UIDL. sized
// reports whether the sizes are known: a UIDL listing that STAT confirms
// (as many messages, no UIDL twice) spares the LIST, which a poll that
// finds nothing new does not need; with 100,000 messages on the server
// the LIST is about a tenth of such a poll. addSizes gets them later.
func (p *pollRun) listMessages(ctx context.Context, c *pop3.Client) (msgs []serverMsg, sized bool, err error) {
	n, _, err := c.Stat(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("counting messages: %w", err)
	}
	if n == 0 {
		return nil, true, nil
	}
	uids, err := c.UIDL(ctx)
	var pe *pop3.Error
	switch {
	case err == nil:
		if msgs := uniqueUIDLs(uids, n); msgs != nil {
			return msgs, false, nil
		}
	case errors.As(err, &pe):
		// RFC 1939 §7: UIDL is optional. Fall back to a digest of the
		// headers, which is stable for as long as the message is there.
		p.log.Info("server has no UIDL; identifying messages by a digest of their headers")
		uids = nil
	default:
		return nil, false, fmt.Errorf("listing unique ids: %w", err)
	}
	list, err := c.List(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("listing messages: %w", err)
	}
	msgs = make([]serverMsg, len(list))
	pos := make(map[int]int, len(list))
	for i, m := range list {
		msgs[i] = serverMsg{id: m.ID, size: m.Size}
		pos[m.ID] = i
	}
	for _, u := range uids {
		if i, ok := pos[u.ID]; ok {
			msgs[i].key = u.UID
		}
	}
	// Messages without a UIDL of their own, and every message whose UIDL
	// the server gave to more than one message, get a header digest: one
	// duplicate must neither hide the other (loss) nor be refetched on
	// every poll (loop).
	count := make(map[string]int, len(msgs))
	for _, m := range msgs {
		count[m.key]++
	}
	var need []int
	for i, m := range msgs {
		if m.key == "" || count[m.key] > 1 {
			need = append(need, i)
		}
	}
	if len(need) > 0 {
		if err := p.digestKeys(ctx, c, msgs, need); err != nil {
			return nil, false, err
		}
	}
	return msgs, true, nil
}

// uniqueUIDLs returns the messages of a UIDL listing without sizes (-1),
// or nil unless it names count messages, each with a UIDL of its own.
func uniqueUIDLs(uids []pop3.UIDEntry, count int) []serverMsg {
	if len(uids) != count {
		return nil
	}
	seen := make(map[string]struct{}, len(uids))
	msgs := make([]serverMsg, len(uids))
	for i, u := range uids {
		if _, dup := seen[u.UID]; dup || u.UID == "" {
			return nil
		}
		seen[u.UID] = struct{}{}
		msgs[i] = serverMsg{id: u.ID, size: -1, key: u.UID}
	}
	return msgs
}

// addSizes fills in the sizes of msgs from a LIST. A message the LIST
// does not name is left out, as if the UIDL listing had not named it, and
// so is its entry of known.
func (p *pollRun) addSizes(ctx context.Context, c *pop3.Client, msgs []serverMsg, known []state.Record) ([]serverMsg, []state.Record, error) {
	list, err := c.List(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing messages: %w", err)
	}
	size := make(map[int]int64, len(list))
	for _, m := range list {
		size[m.ID] = m.Size
	}
	k := 0
	for i, m := range msgs {
		if n, ok := size[m.id]; ok {
			m.size = n
			msgs[k], known[k] = m, known[i]
			k++
		}
	}
	return msgs[:k], known[:k], nil
}

func (p *pollRun) digestKeys(ctx context.Context, c *pop3.Client, msgs []serverMsg, need []int) error {
	ids := make([]int, len(need))
	byID := make(map[int]int, len(need))
	for k, i := range need {
		ids[k] = msgs[i].id
		byID[msgs[i].id] = i
	}
	err := c.TopEach(ctx, ids, 0, func(id int, body io.Reader, err error) error {
		if err != nil {
			return fmt.Errorf("reading headers of message %d: %w", id, err)
		}
		i := byID[id]
		h := sha256.New()
		limit := listedLimit(msgs[i].size)
		n, err := io.Copy(h, io.LimitReader(body, limit+1))
		if err != nil {
			return err
		}
		if n > limit {
			return fmt.Errorf("%w: server sent over %d bytes of headers for message %d, LIST said %d", ErrListedSize, limit, id, msgs[i].size)
		}
		prefix := msgs[i].key
		if prefix == "" {
			prefix = "hdr"
		}
		msgs[i].key = prefix + "#" + hex.EncodeToString(h.Sum(nil)[:12])
		return nil
	})
	if err != nil {
		return fmt.Errorf("identifying messages by header digest: %w", err)
	}
	// Messages with identical headers still need distinct keys: number
	// them in server order.
	seen := make(map[string]int, len(need))
	for _, i := range need {
		k := msgs[i].key
		seen[k]++
		if n := seen[k]; n > 1 {
			msgs[i].key = k + "#" + strconv.Itoa(n)
		}
	}
	return nil
}

// plan splits the server's messages into those to fetch, those newly
// found too big, and those to DELE now. Each record state has its rule
// here; a state without one is never fetched again and never deleted.
// A message with an open intent that waits for its target to settle
// (p.waiting, see resolveIntents) is neither: a later poll decides.
func (p *pollRun) plan(msgs []serverMsg, known []state.Record, now time.Time) (fetchList, skipped, dele []serverMsg) {
	a := p.a
	max := int64(a.MaxSize)
	for i, m := range msgs {
		if _, wait := p.waiting[m.key]; wait {
			continue
		}
		r := &known[i]
		fetch := false
		switch r.State {
		case 0:
			fetch = true
		case state.Skipped:
			// max_size was raised since: fetch it now. A rejected
			// message is not retried that way.
			// Nor is one over an IMAP target's APPENDLIMIT: the limit
			// is the server's, and the message was reported once.
			fetch = !strings.HasPrefix(r.Note, rejectedNote) && !strings.HasPrefix(r.Note, appendLimitNote) &&
				(max == 0 || m.size <= max)
		case state.Delivered:
			switch {
			case !a.Keep:
				dele = append(dele, m)
			case a.DeleteAfter > 0 && now.Sub(r.DeliveredAt) >= time.Duration(a.DeleteAfter):
				dele = append(dele, m)
			}
		case state.Quarantined:
			if p.deletesRejected() {
				dele = append(dele, m)
			}
		case state.Imported:
			// Delivered by the tool popsync took over from, not by popsync:
			// seen, so never fetched, and never DELE'd (neither keep =
			// false nor delete_after), since popsync cannot know the
			// message is still safe where that tool put it.
		}
		if !fetch {
			continue
		}
		switch {
		case max > 0 && m.size > max:
			skipped = append(skipped, m)
		case a.FetchLimit > 0 && len(fetchList) >= a.FetchLimit:
		default:
			fetchList = append(fetchList, m)
		}
	}
	return fetchList, skipped, dele
}
