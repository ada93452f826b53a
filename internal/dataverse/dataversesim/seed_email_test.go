package dataversesim_test

import (
	"strings"
	"testing"

	"github.com/msisync/msisync/internal/dataverse/dataversesim"
)

// Seeded names carry accents (Chloé, García…), but seeded email addresses
// must be plain ASCII: Marketo rejects the others (1003), and a backfill of
// seeded rows would dead-letter them by accident.
func TestSeedEmailsAreASCII(t *testing.T) {
	s := dataversesim.New(dataversesim.Options{})
	res, err := s.Seed(dataversesim.SeedOptions{Users: 50, Contacts: 300, Leads: 300})
	if err != nil {
		t.Fatal(err)
	}
	accented := 0
	for entity, col := range map[string]string{"systemuser": "internalemailaddress", "contact": "emailaddress1", "lead": "emailaddress1"} {
		for _, id := range res.IDs[entity] {
			row, _ := s.Get(entity, id)
			email, _ := row[col].(string)
			name, _ := row["lastname"].(string)
			if first, _ := row["firstname"].(string); strings.ContainsAny(first+name, "éëíóü") {
				accented++
			}
			if email == "" || strings.ContainsFunc(email, func(r rune) bool { return r > 127 || r == '\'' }) {
				t.Errorf("%s %s: email %q is not plain ASCII (name %q)", entity, id, email, name)
			}
		}
	}
	if accented == 0 {
		t.Error("no seeded name has an accent: the test no longer covers the folding")
	}
}
