package marketo_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// Sync the MSI objects in the mandated order against the simulator, then
// read a lead back by externalPersonId.
func Example() {
	sim := marketosim.New(marketosim.Options{ClientID: "id", ClientSecret: "secret"})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	c, err := marketo.New(marketo.Config{BaseURL: srv.URL, ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	c.Sync(ctx, marketotype.SalesPersons, marketotype.SyncRequest{Input: []marketotype.Record{
		{"externalSalesPersonId": "u1", "email": "owner@example.com"}}})
	c.Sync(ctx, marketotype.Companies, marketotype.SyncRequest{Input: []marketotype.Record{
		{"externalCompanyId": "a1", "externalSalesPersonId": "u1", "company": "Acme"}}})
	res, _ := c.Sync(ctx, marketotype.Leads, marketotype.SyncRequest{Input: []marketotype.Record{
		{"email": "ann@example.com", "externalPersonId": "c1", "externalCompanyId": "a1", "externalSalesPersonId": "u1"},
		{"email": "bob@example.com", "externalCompanyId": "missing"}}})
	fmt.Println(res[0].Status, res[1].Status, res[1].Reasons[0].Code, res[1].Class())
	leads, _ := c.Query(ctx, marketotype.Leads, "externalPersonId", []string{"c1"}, []string{"email", "company"})
	fmt.Println(marketo.String(leads[0], "email"), marketo.String(leads[0], "company"))
	// Output:
	// created skipped 1013 dependency
	// ann@example.com Acme
}
