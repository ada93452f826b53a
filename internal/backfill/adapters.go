package backfill

import (
	"context"

	"github.com/msisync/msisync/internal/dataverse"
)

// DataverseLister reads pages through the Dataverse Web API client; it
// also counts rows for the progress bar.
func DataverseLister(c *dataverse.Client) Lister { return dataverseLister{c} }

type dataverseLister struct{ c *dataverse.Client }

func (d dataverseLister) ListPage(ctx context.Context, logicalName string, opts ListOptions, nextLink string) (Page, error) {
	p, err := d.c.ListPage(ctx, logicalName, dataverse.ListOptions{Select: opts.Select, Filter: opts.Filter,
		OrderBy: opts.OrderBy, PageSize: opts.PageSize}, nextLink)
	if err != nil {
		return Page{}, err
	}
	return Page{Rows: p.Rows, Formatted: p.Formatted, NextLink: p.NextLink}, nil
}

func (d dataverseLister) Count(ctx context.Context, logicalName, filter string) (int, error) {
	return d.c.Count(ctx, logicalName, filter)
}
