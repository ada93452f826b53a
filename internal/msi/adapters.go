package msi

import (
	"context"
	"errors"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/marketo"
)

// MarketoLeads reads leads through the Marketo client (which sends 300
// GUIDs as POST …?_method=GET since they pass the 8 KB URL limit).
func MarketoLeads(c *marketo.Client) LeadQuerier { return marketoLeads{c} }

type marketoLeads struct{ c *marketo.Client }

func (m marketoLeads) QueryLeads(ctx context.Context, filterType string, values, fields []string) ([]map[string]any, error) {
	return m.c.Query(ctx, marketo.Leads, filterType, values, fields)
}

// DataversePersons writes through the Dataverse client: a single PATCH
// (If-Match: *) for one update, a $batch for several. The client retries
// 429s itself, honouring Retry-After.
func DataversePersons(c *dataverse.Client) PersonWriter { return dataversePersons{c} }

type dataversePersons struct{ c *dataverse.Client }

func (d dataversePersons) UpdatePersons(ctx context.Context, ups []PersonUpdate) ([]WriteResult, error) {
	if len(ups) == 1 {
		u := ups[0]
		err := d.c.Update(ctx, u.Entity, u.ID, u.Fields)
		if err != nil && ctx.Err() != nil {
			return nil, err
		}
		return []WriteResult{resultOf(err, 204)}, nil
	}
	ops := make([]dataverse.BatchOp, len(ups))
	for i, u := range ups {
		ops[i] = dataverse.BatchOp{LogicalName: u.Entity, ID: u.ID, Fields: u.Fields}
	}
	res, err := d.c.UpdateBatch(ctx, ops)
	if err != nil {
		return nil, err
	}
	out := make([]WriteResult, len(res))
	for i, r := range res {
		out[i] = resultOf(r.Err, r.Status)
	}
	return out, nil
}

func resultOf(err error, status int) WriteResult {
	switch {
	case err == nil:
		return WriteResult{Status: status}
	case dataverse.IsNotFound(err):
		return WriteResult{Status: 404, Err: errors.Join(ErrNotFound, err)}
	}
	var ae *dataverse.APIError
	if errors.As(err, &ae) {
		status = ae.Status
	} else if status < 300 {
		status = 0
	}
	return WriteResult{Status: status, Err: err}
}
