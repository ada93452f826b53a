package receiver

import (
	"context"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"
)

// RouteDiagnosis is the doctor over HTTP, for operators without a shell.
const RouteDiagnosis = "/admin/v1/records/{entity}/{id}/diagnosis"

// probDiagnosis is the problem slug of a failed diagnosis.
const probDiagnosis = "diagnosis"

// DiagnoseFunc explains one record's sync state (the doctor's report, sent
// as JSON). An error with a FieldIssue method is the caller's fault (422,
// naming the field); any other is Marketo, Dataverse or the store failing
// (502).
type DiagnoseFunc func(ctx context.Context, entity, id string) (any, error)

// fieldFault is an error naming the request field at fault.
type fieldFault interface {
	error
	FieldIssue() (field, reason string)
}

func (s *server) diagnosis(w http.ResponseWriter, r *http.Request) {
	rep, err := s.cfg.Diagnose(r.Context(), chi.URLParam(r, "entity"), chi.URLParam(r, "id"))
	if err != nil {
		var ff fieldFault
		if errors.As(err, &ff) {
			field, reason := ff.FieldIssue()
			writeProblem(w, http.StatusUnprocessableEntity, probDiagnosis, "Cannot diagnose", err.Error(), FieldIssue{Field: field, Reason: reason})
			return
		}
		writeProblem(w, http.StatusBadGateway, probDiagnosis, "Diagnosis failed upstream", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
