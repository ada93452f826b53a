package dataversesim

import (
	"fmt"
	"math/rand"
	"strings"
)

// WebhookFaults make asynchronous webhook deliveries go missing, as they do
// in production: Drop is the fraction silently lost (msisync down for longer
// than Dataverse retries, the system job auto-deleted); Fail the fraction
// that become Failed system jobs (asyncoperation statuscode 31) without a
// call. Seed makes the choice repeatable. Synchronous steps are not
// affected (their failure fails the write itself).
type WebhookFaults struct {
	Drop, Fail float64
	Seed       int64
}

// SetWebhookFaults sets the webhook fault switches (zero value: none).
func (s *Server) SetWebhookFaults(f WebhookFaults) error {
	if f.Drop < 0 || f.Fail < 0 || f.Drop+f.Fail > 1 {
		return fmt.Errorf("dataversesim: webhook faults: drop %v and fail %v must be ≥ 0 and add up to ≤ 1", f.Drop, f.Fail)
	}
	s.sw.wmu.Lock()
	defer s.sw.wmu.Unlock()
	s.sw.drop, s.sw.fail = f.Drop, f.Fail
	s.sw.rnd = rand.New(rand.NewSource(f.Seed))
	return nil
}

// WebhookFaultCounts returns how many deliveries the switches dropped and failed.
func (s *Server) WebhookFaultCounts() (dropped, failed int64) {
	s.sw.wmu.Lock()
	defer s.sw.wmu.Unlock()
	return s.sw.dropped, s.sw.failed
}

// webhookFault applies the switches to one delivery; true when it must not
// be made.
func (s *Server) webhookFault(d *delivery) bool {
	s.sw.wmu.Lock()
	if s.sw.rnd == nil || s.sw.drop+s.sw.fail == 0 {
		s.sw.wmu.Unlock()
		return false
	}
	x := s.sw.rnd.Float64()
	drop, fail := x < s.sw.drop, x >= s.sw.drop && x < s.sw.drop+s.sw.fail
	if drop {
		s.sw.dropped++
	}
	if fail {
		s.sw.failed++
	}
	s.sw.wmu.Unlock()
	switch {
	case drop:
		s.log.Debug("dataversesim: webhook delivery dropped (fault switch)", "step", d.stepName, "entity", d.entity, "id", d.recordID)
		return true
	case fail:
		s.stats.failed.Add(1)
		msg := fmt.Sprintf("Webhook call to %s failed: the HTTP status code 503 (Service Unavailable) was returned.", redactURL(d.url))
		s.recordJob(d, 31, msg, -2147220970)
		return true
	}
	return false
}

// SetStepsEnabled disables (or enables again) the webhook steps whose name
// contains nameContains (all steps when empty), as an administrator does in
// the Plugin Registration Tool: statecode 1 Disabled / statuscode 2, and a
// disabled step fires nothing. It returns how many steps it changed.
func (s *Server) SetStepsEnabled(nameContains string, enabled bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	state, status := OptionValue(0), OptionValue(1)
	if !enabled {
		state, status = 1, 2
	}
	n := 0
	for _, st := range s.tables["sdkmessageprocessingstep"] {
		name, _ := st["name"].(string)
		if !strings.Contains(name, nameContains) {
			continue
		}
		if cur, _ := st["statecode"].(OptionValue); cur == state {
			continue
		}
		st["statecode"], st["statuscode"], st["versionnumber"] = state, status, s.nextVersion()
		n++
	}
	return n
}

// applySwitches sets the switches given in Options (checked by the caller's
// flags; an invalid fraction leaves webhooks unfaulted and is logged).
func (s *Server) applySwitches(o Options) {
	if f := o.WebhookFaults; f.Drop != 0 || f.Fail != 0 {
		if err := s.SetWebhookFaults(f); err != nil {
			s.log.Error("dataversesim: webhook faults not applied", "err", err)
		}
	}
	for _, e := range o.Untracked {
		s.SetChangeTracking(e, false)
	}
}
