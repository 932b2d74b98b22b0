//go:build !race

package deliver_test

const raceEnabled = false
