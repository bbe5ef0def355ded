package main

import (
	"fmt"
	"slices"
	"time"
)

type durations []time.Duration

func (d durations) sorted() durations { s := slices.Clone(d); slices.Sort(s); return s }

func (d durations) median() time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := d.sorted()
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (d durations) max() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

func (d durations) min() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Min(d)
}

func (d durations) summary() string {
	return fmt.Sprintf("n=%d min=%dms median=%dms max=%dms", len(d), d.min().Milliseconds(), d.median().Milliseconds(), d.max().Milliseconds())
}
