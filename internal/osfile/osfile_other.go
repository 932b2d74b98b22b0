//go:build !unix

package osfile

// ProcessAlive cannot tell here, so every pid counts as alive.
func ProcessAlive(pid int) bool { return pid > 0 }
