package dataversesim

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"strings"
)

// batchPart is one request of a $batch, or a change set of them.
type batchPart struct {
	req       *http.Request
	contentID string
	changeSet []batchPart
}

// maxBatch is the Dataverse limit of requests per $batch.
const maxBatch = 1000

func (s *Server) serveBatch(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeError(w, &apiError{http.StatusMethodNotAllowed, "0x80060888", "$batch takes POST"})
		return
	}
	parts, err := parseBatch(r)
	if err != nil {
		writeError(w, errBad("$batch: %v", err))
		return
	}
	count := 0
	for _, p := range parts {
		count += max(1, len(p.changeSet))
	}
	if count > maxBatch {
		writeError(w, errBad("The number of requests in a batch (%d) exceeds the limit of %d.", count, maxBatch))
		return
	}
	cont := parsePrefer(r.Header).continueOnErr
	base := baseURL(r)
	var out bytes.Buffer
	boundary := "batchresponse_" + newID()
	failed := false

	s.mu.Lock()
	for _, p := range parts {
		if failed && !cont {
			break
		}
		fmt.Fprintf(&out, "--%s\r\n", boundary)
		if p.changeSet == nil {
			rec := s.runPart(p.req, base, nil)
			writePart(&out, rec, "")
			failed = failed || rec.Code >= 400
			continue
		}
		csb := "changesetresponse_" + newID()
		ids := map[string]string{}
		s.begin()
		var recs []*httptest.ResponseRecorder
		var bad *httptest.ResponseRecorder
		var badID string
		for _, cp := range p.changeSet {
			rec := s.runPart(cp.req, base, ids)
			if rec.Code >= 400 {
				bad, badID = rec, cp.contentID
				break
			}
			if cp.contentID != "" {
				ids[cp.contentID] = rec.Header().Get("OData-EntityId")
			}
			recs = append(recs, rec)
		}
		if bad != nil {
			// A failed change set is rolled back and answered by its error alone.
			s.rollback()
			writePart(&out, bad, badID)
			failed = true
			continue
		}
		s.commit()
		fmt.Fprintf(&out, "Content-Type: multipart/mixed; boundary=%s\r\n\r\n", csb)
		for i, rec := range recs {
			fmt.Fprintf(&out, "--%s\r\n", csb)
			writePart(&out, rec, p.changeSet[i].contentID)
		}
		fmt.Fprintf(&out, "--%s--\r\n", csb)
	}
	s.mu.Unlock()
	fmt.Fprintf(&out, "--%s--\r\n", boundary)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+boundary)
	w.Header().Set("OData-Version", "4.0")
	if cont {
		w.Header().Set("Preference-Applied", "odata.continue-on-error")
	}
	status := http.StatusOK
	if failed && !cont {
		status = http.StatusBadRequest
	}
	w.WriteHeader(status)
	_, _ = w.Write(out.Bytes())
}

// runPart executes one request of a batch; callers hold s.mu.
func (s *Server) runPart(req *http.Request, base string, ids map[string]string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	raw := req.URL.String()
	if strings.HasPrefix(raw, "$") && ids != nil {
		ref, rest, _ := strings.Cut(raw[1:], "/")
		if u, ok := ids[ref]; ok {
			raw = u
			if rest != "" {
				raw += "/" + rest
			}
		}
	}
	rest := raw
	if i := strings.Index(rest, apiPrefix); i >= 0 {
		rest = rest[i+len(apiPrefix):]
	}
	path, query, _ := strings.Cut(rest, "?")
	u, err := url.Parse(base + path)
	if err == nil {
		u.RawQuery = query
	}
	if err != nil {
		writeError(rec, errBad("invalid request URL %q", raw))
		return rec
	}
	req.URL = u
	req.Host = u.Host
	s.route(rec, req, path, s.opts.AppUserID)
	return rec
}

func writePart(out *bytes.Buffer, rec *httptest.ResponseRecorder, contentID string) {
	out.WriteString("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n")
	if contentID != "" {
		fmt.Fprintf(out, "Content-ID: %s\r\n", contentID)
	}
	out.WriteString("\r\n")
	fmt.Fprintf(out, "HTTP/1.1 %d %s\r\n", rec.Code, http.StatusText(rec.Code))
	for k, vs := range rec.Header() {
		for _, v := range vs {
			fmt.Fprintf(out, "%s: %s\r\n", k, v)
		}
	}
	out.WriteString("\r\n")
	out.Write(rec.Body.Bytes())
	out.WriteString("\r\n")
}

func parseBatch(r *http.Request) ([]batchPart, error) {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, fmt.Errorf("Content-Type must be multipart/mixed with a boundary")
	}
	return readParts(r.Body, params["boundary"], false)
}

func readParts(body io.Reader, boundary string, inChangeSet bool) ([]batchPart, error) {
	mr := multipart.NewReader(body, boundary)
	var parts []batchPart
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return parts, nil
		}
		if err != nil {
			return nil, err
		}
		mt, params, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch mt {
		case "multipart/mixed":
			if inChangeSet {
				return nil, fmt.Errorf("change sets cannot be nested")
			}
			cs, err := readParts(p, params["boundary"], true)
			if err != nil {
				return nil, err
			}
			for _, c := range cs {
				if c.req.Method == http.MethodGet {
					return nil, fmt.Errorf("a change set cannot contain GET requests")
				}
			}
			parts = append(parts, batchPart{changeSet: cs})
		case "application/http":
			req, err := readHTTPRequest(p)
			if err != nil {
				return nil, err
			}
			parts = append(parts, batchPart{req: req, contentID: p.Header.Get("Content-ID")})
		default:
			return nil, fmt.Errorf("part Content-Type %q is not application/http or multipart/mixed", mt)
		}
	}
}

// readHTTPRequest parses an embedded request; its body runs to the end of
// the part (batch parts carry no Content-Length).
func readHTTPRequest(r io.Reader) (*http.Request, error) {
	br := bufio.NewReader(r)
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	for err == nil && strings.TrimSpace(line) == "" {
		line, err = tp.ReadLine()
	}
	if err != nil {
		return nil, fmt.Errorf("read request line: %w", err)
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return nil, fmt.Errorf("malformed request line %q", line)
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read headers: %w", err)
	}
	body, _ := io.ReadAll(br)
	body = bytes.TrimRight(body, "\r\n")
	req, err := http.NewRequest(f[0], "http://batch.invalid/", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.URL = &url.URL{Path: f[1]}
	if u, err := url.Parse(f[1]); err == nil {
		req.URL = u
	}
	req.Header = http.Header(hdr)
	return req, nil
}
