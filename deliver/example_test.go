package deliver_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"popsync/deliver"
)

// The sequence a fetcher follows for one batch, and the recovery after a
// crash.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	var t deliver.Target
	t, err = deliver.NewMaildir(filepath.Join(dir, "Maildir"), deliver.MaildirOptions{})
	if err != nil {
		panic(err)
	}
	defer t.Close()

	// 1. Stream each message into its own delivery.
	var batch []deliver.Delivery
	for i, body := range []string{"Subject: one\r\n\r\nhello\r\n", "Subject: two\r\n\r\nworld\r\n"} {
		d, err := t.Begin(ctx, deliver.Meta{Account: "home", UIDL: fmt.Sprint("uidl-", i)})
		if err != nil {
			panic(err)
		}
		if _, err := io.Copy(d, strings.NewReader(body)); err != nil {
			d.Abort()
			continue
		}
		if err := d.Close(); err != nil {
			continue
		}
		batch = append(batch, d)
	}
	// 2. Make the batch durable; now record each d.Token() as an intent.
	if err := t.Prepare(ctx, batch); err != nil {
		panic(err)
	}
	// 3. Move it into place.
	if err := t.Publish(ctx, batch); err != nil {
		// A *deliver.PublishError lists the deliveries that made it; the
		// others are not published and can be aborted or retried.
		panic(err)
	}
	// 4. After a crash: which recorded intents made it?
	tokens := []string{batch[0].Token(), batch[1].Token()}
	got, err := t.Delivered(ctx, tokens)
	if err != nil {
		panic(err)
	}
	// Maildir stores LF line endings: 20 bytes for the 23 sent.
	fmt.Println(got[tokens[0]], got[tokens[1]], batch[0].Size())
	// Output: true true 20
}
