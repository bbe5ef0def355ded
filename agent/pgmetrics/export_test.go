package pgmetrics

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// AddQueryGroup appends (or, with first, prepends) a group named name that
// runs sql and reports nothing: the tests' way to make a query fail or run
// into the statement_timeout or the budget.
func AddQueryGroup(c *Collector, name, sql string, first bool) {
	g := group{name, func(ctx context.Context, conn *pgx.Conn, _ *[]prometheus.Metric) error {
		_, err := conn.Exec(ctx, sql)
		return err
	}}
	if first {
		c.groups = append([]group{g}, c.groups...)
	} else {
		c.groups = append(c.groups, g)
	}
}
