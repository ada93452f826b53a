package receiver

import (
	"context"
	"net/http"
	"time"
)

// RouteBudget is the day's Marketo budget: calls by purpose (every process
// on a shared store), the rolling window now, the remaining quota.
const RouteBudget = "/admin/v1/budget"

// BudgetFunc reads the day's Marketo budget (sent as JSON).
type BudgetFunc func(ctx context.Context) (any, error)

func (s *server) budget(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	b, err := s.cfg.Budget(ctx)
	if err != nil {
		writeProblem(w, http.StatusServiceUnavailable, "budget", "Budget unavailable", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, b)
}
