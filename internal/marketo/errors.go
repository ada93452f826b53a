package marketo

import (
	"fmt"
	"time"
	_ "time/tzdata" // the daily quota resets at midnight America/Chicago

	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// QuotaError says when calls may resume.
type QuotaError struct {
	Op      string
	ResetAt time.Time // next midnight America/Chicago
	Local   bool      // true: the client's own budget, not a 607 from Marketo
	// Purpose is set when the budget left for this purpose is spent while
	// others (sync writes last) may still call.
	Purpose Purpose
}

func (e *QuotaError) Error() string {
	src := "Marketo returned 607"
	if e.Local {
		src = "client DailyQuota budget used"
		if e.Purpose != "" {
			src = "client DailyQuota budget for " + string(e.Purpose) + " calls used"
		}
	}
	return fmt.Sprintf("marketo: %s: %v (%s); calls resume at %s", e.Op, marketotype.ErrQuotaExhausted, src,
		e.ResetAt.Format(time.RFC3339))
}

func (e *QuotaError) Unwrap() error { return marketotype.ErrQuotaExhausted }

// Class is ClassQuota.
func (e *QuotaError) Class() marketotype.Class { return marketotype.ClassQuota }

var chicago = func() *time.Location {
	loc, err := time.LoadLocation("America/Chicago")
	if err != nil {
		return time.FixedZone("CST", -6*3600)
	}
	return loc
}()

// NextQuotaReset returns the first midnight America/Chicago after t, when
// Marketo resets the daily quota.
func NextQuotaReset(t time.Time) time.Time {
	c := t.In(chicago)
	return time.Date(c.Year(), c.Month(), c.Day()+1, 0, 0, 0, 0, chicago)
}

// quotaDay names the Chicago day of t.
func quotaDay(t time.Time) string { return t.In(chicago).Format("2006-01-02") }
