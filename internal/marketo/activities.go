package marketo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// Activity is one entry of the lead-changes feed.
type Activity struct {
	ID             int64
	MarketoGUID    string
	LeadID         int64
	ActivityDate   time.Time
	ActivityTypeID int // 12 New Lead, 13 Data Value Change
	Fields         []ActivityField
	Attributes     map[string]any
}

// ActivityField is a changed field of a Data Value Change activity.
type ActivityField struct {
	ID       int64
	Name     string
	NewValue any
	OldValue any
}

// PagingToken returns the token for activities since t, to start a
// LeadChanges read.
func (c *Client) PagingToken(ctx context.Context, since time.Time) (string, error) {
	op := "get paging token since " + since.UTC().Format(time.RFC3339)
	env, err := c.do(ctx, call{op: op, endpoint: "paging token", method: http.MethodGet,
		path: "/rest/v1/activities/pagingtoken.json", query: url.Values{"sinceDatetime": {since.UTC().Format(time.RFC3339)}}})
	if err != nil {
		return "", err
	}
	if env.NextPageToken == "" {
		return "", &marketotype.Error{Op: op, Code: "611", Message: "response has no nextPageToken"}
	}
	return env.NextPageToken, nil
}

// LeadChanges reads New Lead and Data Value Change activities of fields
// from token on, following moreResult until caught up. It returns the
// activities and the token to continue from next time (Marketo always
// returns one).
func (c *Client) LeadChanges(ctx context.Context, token string, fields []string) ([]Activity, string, error) {
	op := "get lead changes"
	if token == "" {
		return nil, "", fmt.Errorf("marketo: %s: token is required (see PagingToken)", op)
	}
	if len(fields) == 0 {
		return nil, token, fmt.Errorf("marketo: %s: fields are required", op)
	}
	return c.activityPages(ctx, op, "lead changes", "/rest/v1/activities/leadchanges.json", token,
		url.Values{"fields": {strings.Join(fields, ",")}})
}

// activityPages reads an activity feed from token on, following moreResult
// until caught up (at most maxActivityPages pages a call: the token it
// returns resumes the rest next time). Activities and lead changes share
// one shape; fields and primaryAttributeValue are there when the feed has
// them.
func (c *Client) activityPages(ctx context.Context, op, endpoint, path, token string, query url.Values) ([]Activity, string, error) {
	var out []Activity
	for page := 0; page < maxActivityPages; page++ {
		q := url.Values{"nextPageToken": {token}}
		for k, v := range query {
			q[k] = v
		}
		env, err := c.do(ctx, call{op: op, endpoint: endpoint, method: http.MethodGet, path: path, query: q})
		if err != nil {
			return out, token, err
		}
		var raw []struct {
			ID                    json.Number `json:"id"`
			MarketoGUID           string      `json:"marketoGUID"`
			LeadID                json.Number `json:"leadId"`
			ActivityDate          string      `json:"activityDate"`
			ActivityTypeID        int         `json:"activityTypeId"`
			PrimaryAttributeValue any         `json:"primaryAttributeValue"`
			Fields                []struct {
				ID       json.Number `json:"id"`
				Name     string      `json:"name"`
				NewValue any         `json:"newValue"`
				OldValue any         `json:"oldValue"`
			} `json:"fields"`
			Attributes []struct {
				Name  string `json:"name"`
				Value any    `json:"value"`
			} `json:"attributes"`
		}
		if len(env.Result) > 0 {
			dec := json.NewDecoder(bytes.NewReader(env.Result))
			dec.UseNumber()
			if err := dec.Decode(&raw); err != nil {
				return out, token, &marketotype.Error{Op: op, Err: fmt.Errorf("decode result: %w", err)}
			}
		}
		for _, r := range raw {
			a := Activity{MarketoGUID: r.MarketoGUID, ActivityTypeID: r.ActivityTypeID, Attributes: map[string]any{}}
			a.ID, _ = r.ID.Int64()
			a.LeadID, _ = r.LeadID.Int64()
			for _, layout := range []string{"2006-01-02T15:04:05Z0700", time.RFC3339} {
				if t, err := time.Parse(layout, r.ActivityDate); err == nil {
					a.ActivityDate = t
					break
				}
			}
			for _, f := range r.Fields {
				id, _ := f.ID.Int64()
				a.Fields = append(a.Fields, ActivityField{ID: id, Name: f.Name, NewValue: f.NewValue, OldValue: f.OldValue})
			}
			if r.PrimaryAttributeValue != nil {
				a.Attributes["primaryAttributeValue"] = r.PrimaryAttributeValue
			}
			for _, at := range r.Attributes {
				a.Attributes[at.Name] = at.Value
			}
			out = append(out, a)
		}
		if env.NextPageToken != "" {
			token = env.NextPageToken
		}
		if !env.MoreResult {
			break
		}
	}
	return out, token, nil
}

// maxActivityPages bounds one read of a feed; the returned token goes on
// from where it stopped.
const maxActivityPages = 10000
