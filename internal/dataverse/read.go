package dataverse

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/msisync/msisync/internal/event"
)

var entitySets = map[string]string{
	"systemuser": "systemusers", "account": "accounts", "contact": "contacts", "lead": "leads",
	"opportunity": "opportunities", "connection": "connections", "connectionrole": "connectionroles",
	"serviceendpoint": "serviceendpoints", "sdkmessage": "sdkmessages", "sdkmessagefilter": "sdkmessagefilters",
	"sdkmessageprocessingstep": "sdkmessageprocessingsteps", "sdkmessageprocessingstepimage": "sdkmessageprocessingstepimages",
	"asyncoperation": "asyncoperations", "businessunit": "businessunits", "team": "teams",
	"transactioncurrency": "transactioncurrencies", "activityparty": "activityparties", "campaign": "campaigns",
}

// EntitySet returns the Web API entity set name of a table:
// systemuser → systemusers, opportunity → opportunities.
func EntitySet(logicalName string) string {
	if s, ok := entitySets[logicalName]; ok {
		return s
	}
	n := logicalName
	switch {
	case strings.HasSuffix(n, "y") && len(n) > 1 && !strings.ContainsRune("aeiou", rune(n[len(n)-2])):
		return n[:len(n)-1] + "ies"
	case strings.HasSuffix(n, "s"), strings.HasSuffix(n, "x"), strings.HasSuffix(n, "ch"), strings.HasSuffix(n, "sh"):
		return n + "es"
	}
	return n + "s"
}

// lookupColumns are the lookup columns of the tables msisync reads: the Web
// API addresses them as _x_value in $select, $filter and $orderby.
var lookupColumns = map[string]bool{
	"ownerid": true, "owninguser": true, "owningteam": true, "owningbusinessunit": true,
	"createdby": true, "modifiedby": true, "createdonbehalfby": true, "modifiedonbehalfby": true,
	"parentaccountid": true, "primarycontactid": true, "parentcustomerid": true, "originatingleadid": true,
	"parentcontactid": true, "customerid": true, "qualifyingopportunityid": true, "transactioncurrencyid": true,
	"record1id": true, "record2id": true, "record1roleid": true, "record2roleid": true, "relatedconnectionid": true,
	"businessunitid": true, "sdkmessageid": true, "sdkmessagefilterid": true, "eventhandler": true,
	"sdkmessageprocessingstepid": true, "owningextensionid": true, "regardingobjectid": true, "impersonatinguserid": true,
	"campaignid": true, "masterid": true,
}

// QueryName returns the name a column has in $select/$filter/$orderby:
// lookups (known ones, or any name the caller already wrote as _x_value)
// become _x_value; other columns are unchanged.
func QueryName(logicalName, column string) string {
	if strings.HasPrefix(column, "_") && strings.HasSuffix(column, "_value") {
		return column
	}
	if lookupColumns[column] && column != logicalName+"id" {
		return "_" + column + "_value"
	}
	return column
}

func selectList(logicalName string, columns []string) string {
	parts := make([]string, 0, len(columns))
	seen := map[string]bool{}
	for _, c := range columns {
		q := QueryName(logicalName, strings.TrimSpace(c))
		if q != "" && !seen[q] {
			seen[q] = true
			parts = append(parts, q)
		}
	}
	return strings.Join(parts, ",")
}

// queryEscape escapes a query value with %20 for spaces, which OData
// services read reliably (a '+' may be taken literally).
func queryEscape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

const annotationsPrefer = `odata.include-annotations="OData.Community.Display.V1.FormattedValue,Microsoft.Dynamics.CRM.lookuplogicalname"`

const (
	annFormatted = "@OData.Community.Display.V1.FormattedValue"
	annLogical   = "@Microsoft.Dynamics.CRM.lookuplogicalname"
)

// Read fetches one row with the given columns (logical names; lookups are
// translated to _x_value, see QueryName) and converts it to typed values:
// a lookup `_x_value` with its lookuplogicalname annotation becomes an
// event.Reference under "x" (Name = the formatted value); numbers (also
// choices) are KindNumber; strings, booleans and nulls as such; dates stay
// ISO strings (Value.TimeValue parses them). Use ReadFormatted for the
// display strings. ErrNotFound when the row does not exist.
func (c *Client) Read(ctx context.Context, logicalName, id string, columns []string) (event.Attributes, error) {
	a, _, err := c.ReadFormatted(ctx, logicalName, id, columns)
	return a, err
}

// ReadFormatted is Read that also returns the formatted values (labels of
// choices, currency strings, lookup names) by column logical name.
func (c *Client) ReadFormatted(ctx context.Context, logicalName, id string, columns []string) (event.Attributes, map[string]string, error) {
	if logicalName == "" {
		return nil, nil, fmt.Errorf("dataverse: read: logical name is empty")
	}
	if !event.IsGUID(id) {
		return nil, nil, fmt.Errorf("dataverse: read %s: id %q is not a GUID", logicalName, id)
	}
	target := EntitySet(logicalName) + "(" + event.NormalizeID(id) + ")"
	if len(columns) > 0 {
		target += "?$select=" + queryEscape(selectList(logicalName, columns))
	}
	_, body, err := c.do(ctx, request{method: http.MethodGet, target: target, idempotent: true,
		header: http.Header{"Prefer": {annotationsPrefer}}})
	if err != nil {
		return nil, nil, fmt.Errorf("dataverse: read %s %s: %w", logicalName, id, err)
	}
	row, err := decodeObject(body)
	if err != nil {
		return nil, nil, fmt.Errorf("dataverse: read %s %s: %w", logicalName, id, err)
	}
	attrs, fmts := ConvertRow(row)
	return attrs, fmts, nil
}

func decodeObject(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	return m, nil
}

// ConvertRow converts one Web API row (decoded with UseNumber) to typed
// attributes and formatted values, as Read documents.
func ConvertRow(row map[string]any) (event.Attributes, map[string]string) {
	attrs := event.Attributes{}
	fmts := map[string]string{}
	for k, v := range row {
		if strings.HasPrefix(k, "@") || strings.Contains(k, "@") {
			continue
		}
		name := k
		if strings.HasPrefix(k, "_") && strings.HasSuffix(k, "_value") {
			name = strings.TrimSuffix(strings.TrimPrefix(k, "_"), "_value")
			formatted, _ := row[k+annFormatted].(string)
			if formatted != "" {
				fmts[name] = formatted
			}
			if id, ok := v.(string); ok {
				if logical, ok := row[k+annLogical].(string); ok && logical != "" {
					attrs[name] = event.Reference(logical, id, formatted)
				} else {
					attrs[name] = event.String(event.NormalizeID(id))
				}
				continue
			}
			if v == nil {
				attrs[name] = event.Null()
				continue
			}
		}
		if f, ok := row[k+annFormatted].(string); ok {
			fmts[name] = f
		}
		switch x := v.(type) {
		case nil:
			attrs[name] = event.Null()
		case string:
			attrs[name] = event.String(x)
		case json.Number:
			attrs[name] = event.Number(x)
		case bool:
			attrs[name] = event.Bool(x)
		default:
			b, _ := json.Marshal(x)
			attrs[name] = event.String(string(b))
		}
	}
	return attrs, fmts
}

// ListOptions select, filter and order a list. Filter and OrderBy are
// OData text passed as is (write lookups as _x_value there).
type ListOptions struct {
	Select   []string
	Filter   string
	OrderBy  string
	PageSize int // odata.maxpagesize, ≤ 5000 (default 5000)
	Top      int // $top, 0 for none
	// TrackChanges asks for change tracking (the table must have it
	// enabled): the last page carries a DeltaLink; passing it later as
	// nextLink returns the rows changed since, and the ids deleted since
	// in Page.Deleted. Filter, OrderBy and Top are not allowed with it.
	TrackChanges bool
}

// Page is one page of rows, and the link to the next ("" on the last).
type Page struct {
	Rows      []event.Attributes
	Formatted []map[string]string // aligned with Rows
	NextLink  string
	DeltaLink string   // change tracking: where to ask for later changes
	Deleted   []string // change tracking: ids deleted since the delta token
}

// MaxPageSize is Dataverse's ceiling for odata.maxpagesize.
const MaxPageSize = 5000

// ListPage fetches one page of a table. With nextLink == "" it starts a
// query from opts; otherwise it follows the @odata.nextLink of the previous
// page (opts.PageSize still sets the Prefer header).
func (c *Client) ListPage(ctx context.Context, logicalName string, opts ListOptions, nextLink string) (Page, error) {
	size := opts.PageSize
	if size == 0 {
		size = MaxPageSize
	}
	if size < 0 || size > MaxPageSize {
		return Page{}, fmt.Errorf("dataverse: list %s: page size %d is outside 1..%d", logicalName, opts.PageSize, MaxPageSize)
	}
	target := nextLink
	if target == "" {
		var q []string
		if len(opts.Select) > 0 {
			q = append(q, "$select="+queryEscape(selectList(logicalName, opts.Select)))
		}
		if opts.Filter != "" {
			q = append(q, "$filter="+queryEscape(opts.Filter))
		}
		if opts.OrderBy != "" {
			q = append(q, "$orderby="+queryEscape(opts.OrderBy))
		}
		if opts.Top > 0 {
			q = append(q, "$top="+strconv.Itoa(opts.Top))
		}
		target = EntitySet(logicalName)
		if len(q) > 0 {
			target += "?" + strings.Join(q, "&")
		}
	}
	if opts.TrackChanges && (opts.Filter != "" || opts.OrderBy != "" || opts.Top > 0) {
		return Page{}, fmt.Errorf("dataverse: list %s: change tracking does not allow Filter, OrderBy or Top", logicalName)
	}
	prefer := "odata.maxpagesize=" + strconv.Itoa(size) + "," + annotationsPrefer
	if opts.TrackChanges || strings.Contains(nextLink, "deltatoken=") {
		prefer += ",odata.track-changes"
	}
	_, body, err := c.do(ctx, request{method: http.MethodGet, target: target, idempotent: true,
		header: http.Header{"Prefer": {prefer}}})
	if err != nil {
		return Page{}, fmt.Errorf("dataverse: list %s: %w", logicalName, err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var env struct {
		Value     []map[string]any `json:"value"`
		NextLink  string           `json:"@odata.nextLink"`
		DeltaLink string           `json:"@odata.deltaLink"`
	}
	if err := dec.Decode(&env); err != nil {
		return Page{}, fmt.Errorf("dataverse: list %s: decode response: %w", logicalName, err)
	}
	p := Page{NextLink: env.NextLink, DeltaLink: env.DeltaLink, Rows: make([]event.Attributes, 0, len(env.Value)), Formatted: make([]map[string]string, 0, len(env.Value))}
	for _, row := range env.Value {
		if ctxURL, _ := row["@odata.context"].(string); strings.HasSuffix(ctxURL, "/$deletedEntity") {
			if id, ok := row["id"].(string); ok {
				p.Deleted = append(p.Deleted, event.NormalizeID(id))
			}
			continue
		}
		a, f := ConvertRow(row)
		p.Rows = append(p.Rows, a)
		p.Formatted = append(p.Formatted, f)
	}
	return p, nil
}

// Count returns the number of rows of a table. Without a filter it uses
// RetrieveTotalRecordCount (a snapshot Dataverse may cache for hours);
// with one, $count (which Dataverse caps at 5000, in which case the
// unfiltered total is returned as an upper bound). It is meant for
// progress bars, not for logic.
func (c *Client) Count(ctx context.Context, logicalName, filter string) (int, error) {
	if filter != "" {
		target := EntitySet(logicalName) + "?$select=" + QueryName(logicalName, logicalName+"id") +
			"&$filter=" + queryEscape(filter) + "&$count=true"
		_, body, err := c.do(ctx, request{method: http.MethodGet, target: target, idempotent: true,
			header: http.Header{"Prefer": {"odata.maxpagesize=1"}}})
		if err != nil {
			return 0, fmt.Errorf("dataverse: count %s: %w", logicalName, err)
		}
		var env struct {
			Count *int `json:"@odata.count"`
		}
		if err := json.Unmarshal(body, &env); err != nil || env.Count == nil {
			return 0, fmt.Errorf("dataverse: count %s: no @odata.count in the response", logicalName)
		}
		if *env.Count < 5000 {
			return *env.Count, nil
		}
	}
	target := "RetrieveTotalRecordCount(EntityNames=@p)?@p=" + queryEscape(`["`+logicalName+`"]`)
	_, body, err := c.do(ctx, request{method: http.MethodGet, target: target, idempotent: true})
	if err != nil {
		return 0, fmt.Errorf("dataverse: count %s: %w", logicalName, err)
	}
	var env struct {
		Coll struct {
			Keys   []string `json:"Keys"`
			Values []int    `json:"Values"`
		} `json:"EntityRecordCountCollection"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return 0, fmt.Errorf("dataverse: count %s: decode: %w", logicalName, err)
	}
	for i, k := range env.Coll.Keys {
		if k == logicalName && i < len(env.Coll.Values) {
			return env.Coll.Values[i], nil
		}
	}
	return 0, fmt.Errorf("dataverse: count %s: table missing from RetrieveTotalRecordCount", logicalName)
}
