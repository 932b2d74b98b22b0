package deliver

// SetIMAPRecentScan sets how many of the newest messages Delivered reads
// before it searches, and returns a function that restores the old value.
func SetIMAPRecentScan(n int) (restore func()) {
	old := imapRecentScan
	imapRecentScan = n
	return func() { imapRecentScan = old }
}
