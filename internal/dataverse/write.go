package dataverse

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/msisync/msisync/internal/event"
)

// Update PATCHes columns of an existing row with If-Match: * so it never
// creates one; ErrNotFound when the row does not exist. Values are Web API
// JSON values; set lookups with "x@odata.bind": "/accounts(<id>)".
func (c *Client) Update(ctx context.Context, logicalName, id string, fields map[string]any) error {
	if !event.IsGUID(id) {
		return fmt.Errorf("dataverse: update %s: id %q is not a GUID", logicalName, id)
	}
	body, err := json.Marshal(fields)
	if err != nil {
		return fmt.Errorf("dataverse: update %s %s: encode fields: %w", logicalName, id, err)
	}
	_, _, err = c.do(ctx, request{method: http.MethodPatch, target: EntitySet(logicalName) + "(" + event.NormalizeID(id) + ")",
		header: http.Header{"If-Match": {"*"}}, body: body, idempotent: true})
	if err != nil {
		return fmt.Errorf("dataverse: update %s %s: %w", logicalName, id, err)
	}
	return nil
}

// BatchOp is one update (PATCH, If-Match: *) in UpdateBatch.
type BatchOp struct {
	LogicalName, ID string
	Fields          map[string]any
}

// BatchResult is the outcome of one BatchOp: Status is the HTTP status of
// the operation (0 if it was not executed); Err is non-nil on failure and
// wraps ErrNotFound for a missing row.
type BatchResult struct {
	Status int
	Err    error
}

// MaxBatch is the Dataverse limit of operations per $batch request.
const MaxBatch = 1000

// UpdateBatch sends the updates as $batch requests of at most MaxBatch
// operations with Prefer: odata.continue-on-error, each operation on its
// own (outside change sets, so one failure does not undo the others). It
// returns one result per op, in order. The error is non-nil only when a
// whole request failed; results of chunks already sent are kept.
func (c *Client) UpdateBatch(ctx context.Context, ops []BatchOp) ([]BatchResult, error) {
	results := make([]BatchResult, len(ops))
	for start := 0; start < len(ops); start += MaxBatch {
		end := min(start+MaxBatch, len(ops))
		if err := c.updateChunk(ctx, ops[start:end], results[start:end]); err != nil {
			for i := start; i < len(ops); i++ {
				if results[i].Status == 0 && results[i].Err == nil {
					results[i].Err = err
				}
			}
			return results, fmt.Errorf("dataverse: batch update of %d rows (ops %d..%d): %w", len(ops), start, end-1, err)
		}
	}
	return results, nil
}

func (c *Client) updateChunk(ctx context.Context, ops []BatchOp, results []BatchResult) error {
	boundary := "batch_" + uuid.NewString()
	var b bytes.Buffer
	var sent []int // indexes of the ops in the request
	for i, op := range ops {
		if !event.IsGUID(op.ID) {
			results[i].Err = fmt.Errorf("dataverse: update %s: id %q is not a GUID", op.LogicalName, op.ID)
			continue
		}
		body, err := json.Marshal(op.Fields)
		if err != nil {
			results[i].Err = fmt.Errorf("dataverse: update %s %s: encode fields: %w", op.LogicalName, op.ID, err)
			continue
		}
		fmt.Fprintf(&b, "--%s\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n", boundary)
		fmt.Fprintf(&b, "PATCH %s%s(%s) HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\nIf-Match: *\r\n\r\n",
			c.base, EntitySet(op.LogicalName), event.NormalizeID(op.ID))
		b.Write(body)
		b.WriteString("\r\n")
		sent = append(sent, i)
	}
	if len(sent) == 0 {
		return nil
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	resp, body, err := c.do(ctx, request{method: http.MethodPost, target: "$batch", body: b.Bytes(), idempotent: true,
		header: http.Header{"Content-Type": {"multipart/mixed; boundary=" + boundary}, "Prefer": {"odata.continue-on-error"}}})
	if err != nil {
		return err
	}
	statuses, err := parseBatchResponse(resp, body)
	if err != nil {
		return fmt.Errorf("parse $batch response: %w", err)
	}
	for k, i := range sent {
		op := ops[i]
		if k >= len(statuses) {
			results[i] = BatchResult{Err: fmt.Errorf("dataverse: update %s %s: not executed (the batch stopped early)", op.LogicalName, op.ID)}
			continue
		}
		st := statuses[k]
		results[i].Status = st.status
		if st.status >= 400 {
			e := parseAPIError(http.MethodPatch, EntitySet(op.LogicalName)+"("+event.NormalizeID(op.ID)+")", st.status, st.body)
			results[i].Err = fmt.Errorf("dataverse: update %s %s: %w", op.LogicalName, op.ID, e)
		}
	}
	return nil
}

type partStatus struct {
	status int
	body   []byte
}

// parseBatchResponse returns the status of every operation, in order,
// flattening change set responses.
func parseBatchResponse(resp *http.Response, body []byte) ([]partStatus, error) {
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mt, "multipart/") {
		return nil, fmt.Errorf("Content-Type %q is not multipart", resp.Header.Get("Content-Type"))
	}
	return readBatchParts(bytes.NewReader(body), params["boundary"])
}

func readBatchParts(r io.Reader, boundary string) ([]partStatus, error) {
	mr := multipart.NewReader(r, boundary)
	var out []partStatus
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		mt, params, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		if strings.HasPrefix(mt, "multipart/") {
			inner, err := readBatchParts(p, params["boundary"])
			if err != nil {
				return nil, err
			}
			out = append(out, inner...)
			continue
		}
		res, err := http.ReadResponse(bufio.NewReader(p), nil)
		if err != nil {
			return nil, fmt.Errorf("read part response: %w", err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		out = append(out, partStatus{status: res.StatusCode, body: b})
	}
}
