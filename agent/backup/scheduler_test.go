package backup

import (
	"testing"
	"time"
)

func TestOccurrence(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	at := func(s string, loc *time.Location) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	cases := []struct {
		name     string
		schedule string
		tz       string
		window   time.Duration
		now      time.Time
		want     time.Time // zero: none open
	}{
		{"inside the window", "0 2 * * *", "UTC", time.Hour, at("2026-03-01 02:30", time.UTC), at("2026-03-01 02:00", time.UTC)},
		{"window closed", "0 2 * * *", "UTC", time.Hour, at("2026-03-01 03:30", time.UTC), time.Time{}},
		{"before the time", "0 2 * * *", "UTC", time.Hour, at("2026-03-01 01:59", time.UTC), time.Time{}},
		{"time zone", "0 2 * * *", "Europe/Paris", time.Hour, at("2026-03-01 01:10", time.UTC), at("2026-03-01 02:00", paris)},
		{"latest of several missed", "@hourly", "UTC", 3 * time.Hour, at("2026-03-01 05:20", time.UTC), at("2026-03-01 05:00", time.UTC)},
		{"exactly at the time", "30 4 * * *", "UTC", time.Minute, at("2026-03-01 04:30", time.UTC), at("2026-03-01 04:30", time.UTC)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok, err := Occurrence(Job{Name: "j", Schedule: c.schedule, TimeZone: c.tz, Window: c.window}, c.now)
			if err != nil {
				t.Fatal(err)
			}
			if ok != !c.want.IsZero() || (ok && !got.Equal(c.want)) {
				t.Fatalf("Occurrence at %s = %s, %v; want %s", c.now, got, ok, c.want)
			}
		})
	}
	if _, _, err := Occurrence(Job{Name: "j", Schedule: "nonsense", TimeZone: "UTC", Window: time.Hour}, time.Now()); err == nil {
		t.Fatal("bad schedule accepted")
	}
}
