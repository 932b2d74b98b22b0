package configs

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

var scheduleParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule parses an account's schedule the way popsync runs it: a
// five-field cron line ("*/10 6-22 * * 1-5", optionally prefixed by
// "CRON_TZ=Area/City "), a descriptor ("@hourly", "@daily") or
// "@every <duration>" with a duration of at least one second. Malformed specs
// that make the cron parser panic come back as errors.
func ParseSchedule(spec string) (sched cron.Schedule, err error) {
	spec = strings.TrimSpace(spec)
	defer func() {
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("%q is not a valid schedule", spec)
		}
	}()
	if rest, ok := strings.CutPrefix(spec, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil {
			return nil, fmt.Errorf(`"@every" needs a duration such as "5m" or "1h30m", not %q`, strings.TrimSpace(rest))
		}
		if d < time.Second {
			// cron.Every would silently turn anything shorter into 1s.
			return nil, fmt.Errorf(`"@every" needs at least "1s", not %q`, strings.TrimSpace(rest))
		}
		return cron.Every(d), nil
	}
	s, err := scheduleParser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("%q is not a valid schedule (a cron line such as \"*/10 * * * *\", \"@hourly\" or \"@every 5m\"): %w", spec, err)
	}
	return s, nil
}
