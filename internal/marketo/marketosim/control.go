package marketosim

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Control returns an http.Handler with the simulator's control endpoints,
// for demos and manual tests (mount it under a prefix, e.g. /sim):
//
//	GET  /state                 the records (Dump)
//	GET  /stats                 request and response counts
//	POST /msi                   {"externalPersonId": "...", "fields": {"priority": 4, ...}} sets MSI fields
//	POST /msi/tick?leads=N      changes the MSI fields of N random leads
func (s *Server) Control() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) { writeControl(w, http.StatusOK, s.Dump()) })
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) { writeControl(w, http.StatusOK, s.Stats()) })
	mux.HandleFunc("POST /msi", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ExternalPersonID string         `json:"externalPersonId"`
			Fields           map[string]any `json:"fields"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeControl(w, http.StatusBadRequest, map[string]string{"error": "body: " + err.Error()})
			return
		}
		if strings.TrimSpace(req.ExternalPersonID) == "" || len(req.Fields) == 0 {
			writeControl(w, http.StatusUnprocessableEntity, map[string]string{"error": "externalPersonId and fields are required"})
			return
		}
		before := s.countLeads(req.ExternalPersonID)
		if before == 0 {
			writeControl(w, http.StatusNotFound, map[string]string{"error": "no lead has externalPersonId " + req.ExternalPersonID})
			return
		}
		s.SetMSI(req.ExternalPersonID, req.Fields)
		writeControl(w, http.StatusOK, map[string]int{"leads": before})
	})
	mux.HandleFunc("POST /msi/tick", func(w http.ResponseWriter, r *http.Request) {
		n := 5
		if v := r.URL.Query().Get("leads"); v != "" {
			var err error
			if n, err = strconv.Atoi(v); err != nil || n < 1 {
				writeControl(w, http.StatusBadRequest, map[string]string{"error": "leads must be a whole number ≥ 1"})
				return
			}
		}
		writeControl(w, http.StatusOK, map[string]any{"changed": s.TickMSI(n)})
	})
	return mux
}

func (s *Server) countLeads(externalPersonID string) int {
	n := 0
	for _, l := range s.Dump().Leads {
		if v, _ := l["externalPersonId"].(string); strings.EqualFold(v, externalPersonID) {
			n++
		}
	}
	return n
}

func writeControl(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
