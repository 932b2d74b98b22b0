//go:build !unix

package deliver

// processAlive cannot tell here, so every writer counts as alive and no
// file is removed.
func processAlive(pid int) bool { return true }
