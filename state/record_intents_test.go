package state_test

import (
	"testing"

	"popsync/state"
)

// storeWrapper adds a method and says what it wraps.
type storeWrapper struct{ state.Store }

func (w storeWrapper) Unwrap() state.Store { return w.Store }

// opaque wraps a store without Unwrap: it may change anything.
type opaque struct{ state.Store }

func TestIntentRecorderOfLooksThroughUnwrap(t *testing.T) {
	s := openTest(t)
	if state.IntentRecorderOf(storeWrapper{storeWrapper{s}}) == nil {
		t.Error("not found through two wrappers with Unwrap")
	}
	if state.IntentRecorderOf(opaque{s}) != nil {
		t.Error("found through a wrapper without Unwrap")
	}
}
