//go:build race

package deliver_test

// raceEnabled: the race detector changes allocation (sync.Pool drops
// items at random), so memory bounds are not checked under it.
const raceEnabled = true
