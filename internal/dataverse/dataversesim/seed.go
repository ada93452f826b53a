package dataversesim

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"
)

// SeedOptions says how many rows of each entity Seed generates.
type SeedOptions struct {
	Users, Accounts, Contacts, Leads, Opportunities int
	// Connections is the number of opportunity–contact stakeholder links
	// (each stores two rows).
	Connections int
	// Seed makes the data reproducible (0: a fixed default).
	Seed uint64
	// Fire delivers webhooks for the seeded rows; off by default so large
	// seeds are fast.
	Fire bool
	// Spread spreads createdon/modifiedon over this period before now
	// (default 365 days), so `modifiedon gt` filters select a share.
	Spread time.Duration
}

// SeedResult lists the ids created per entity.
type SeedResult struct {
	IDs map[string][]string
}

var (
	firstNames = []string{"Ada", "Ben", "Chloé", "Dev", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Victor", "Wen", "Yusuf", "Zoë"}
	lastNames  = []string{"Anders", "Brown", "Chen", "Dubois", "Evans", "Fischer", "García", "Hansen", "Ito", "Jones", "Kowalski", "López", "Müller", "Nakamura", "O'Brien", "Patel", "Rossi", "Smith", "Tanaka", "Nguyen", "Weber", "Young"}
	companies  = []string{"Contoso", "Fabrikam", "Northwind", "Adventure Works", "Litware", "Tailspin", "Wingtip", "Proseware", "Lucerne", "Alpine Ski", "Coho Winery", "Fourth Coffee", "Margie's Travel", "Trey Research", "Woodgrove"}
	suffixes   = []string{"Inc.", "Ltd", "GmbH", "S.A.", "LLC", "Group", "Holdings", "Labs"}
	cities     = []string{"Seattle", "London", "Paris", "Berlin", "Tokyo", "Toronto", "Sydney", "Madrid", "Dublin", "Austin"}
	titles     = []string{"CTO", "VP Sales", "Buyer", "Engineer", "Marketing Manager", "CFO", "Analyst", "Director of IT"}
)

// asciiFold spells the accented letters of the seed names in ASCII.
var asciiFold = strings.NewReplacer("é", "e", "ë", "e", "í", "i", "ó", "o", "ü", "u")

// emailPart turns a name into the local part of an email address: names
// keep their accents, but Marketo (and its simulator) accept only ASCII
// email addresses, so seeded rows must not fail there by accident.
func emailPart(name string) string {
	folded := asciiFold.Replace(strings.ToLower(name))
	var b strings.Builder
	for _, r := range folded {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Seed generates realistic rows quickly (50,000 in well under a second),
// for backfill tests and benchmarks. Rows are owned by the seeded users.
func (s *Server) Seed(o SeedOptions) (SeedResult, error) {
	seed := o.Seed
	if seed == 0 {
		seed = 42
	}
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	spread := o.Spread
	if spread == 0 {
		spread = 365 * 24 * time.Hour
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !o.Fire {
		s.mute++
		defer func() { s.mute-- }()
	}
	res := SeedResult{IDs: map[string][]string{}}
	now := s.clk.Now().UTC().Truncate(time.Second)
	pick := func(l []string) string { return l[rnd.IntN(len(l))] }
	stamp := func(entity, id string) {
		t := now.Add(-time.Duration(rnd.Int64N(int64(spread)))).Truncate(time.Second)
		row := s.tables[entity][id]
		row["createdon"], row["modifiedon"] = t, t
	}
	add := func(entity string, attrs map[string]any) (string, error) {
		id, err := s.create(entities[entity], attrs, s.opts.UserID, nil)
		if err != nil {
			return "", fmt.Errorf("dataversesim: seed %s: %w", entity, err)
		}
		stamp(entity, id)
		res.IDs[entity] = append(res.IDs[entity], id)
		return id, nil
	}
	owners := []Ref{{"systemuser", s.opts.UserID}}
	for i := 0; i < o.Users; i++ {
		f, l := pick(firstNames), pick(lastNames)
		email := fmt.Sprintf("%s.%s%d@example.com", emailPart(f), emailPart(l), i)
		id, err := add("systemuser", map[string]any{"firstname": f, "lastname": l, "internalemailaddress": email, "domainname": email,
			"isdisabled": false, "title": "Account Executive", "businessunitid": Ref{"businessunit", s.buID}})
		if err != nil {
			return res, err
		}
		owners = append(owners, Ref{"systemuser", id})
	}
	owner := func() Ref { return owners[rnd.IntN(len(owners))] }
	for i := 0; i < o.Accounts; i++ {
		name := fmt.Sprintf("%s %s %d", pick(companies), pick(suffixes), i)
		if _, err := add("account", map[string]any{"name": name, "address1_city": pick(cities), "telephone1": fmt.Sprintf("+1 555 %07d", i),
			"websiteurl": fmt.Sprintf("https://www.example%d.com", i), "numberofemployees": int64(10 + rnd.IntN(5000)),
			"revenue": Money(float64(rnd.IntN(100000000))), "industrycode": OptionValue([]int{1, 7, 12, 19, 25, 33}[rnd.IntN(6)]),
			"ownerid": owner()}); err != nil {
			return res, err
		}
	}
	accounts := res.IDs["account"]
	for i := 0; i < o.Contacts; i++ {
		f, l := pick(firstNames), pick(lastNames)
		attrs := map[string]any{"firstname": f, "lastname": l, "jobtitle": pick(titles), "address1_city": pick(cities),
			"emailaddress1": fmt.Sprintf("%s.%s.%d@example.org", emailPart(f), emailPart(l), i),
			"telephone1":    fmt.Sprintf("+1 555 %07d", i), "ownerid": owner()}
		if len(accounts) > 0 {
			attrs["parentcustomerid"] = Ref{"account", accounts[rnd.IntN(len(accounts))]}
		}
		if _, err := add("contact", attrs); err != nil {
			return res, err
		}
	}
	for i := 0; i < o.Leads; i++ {
		f, l := pick(firstNames), pick(lastNames)
		if _, err := add("lead", map[string]any{"firstname": f, "lastname": l, "companyname": pick(companies) + " " + pick(suffixes),
			"emailaddress1": fmt.Sprintf("lead.%s.%d@example.net", emailPart(f), i), "jobtitle": pick(titles),
			"subject":        "Interested in " + pick([]string{"licences", "services", "support", "training"}),
			"leadsourcecode": OptionValue([]int{1, 2, 3, 4, 8, 10}[rnd.IntN(6)]), "ownerid": owner()}); err != nil {
			return res, err
		}
	}
	contacts := res.IDs["contact"]
	for i := 0; i < o.Opportunities; i++ {
		attrs := map[string]any{"name": fmt.Sprintf("%s deal %d", pick([]string{"Renewal", "Expansion", "New logo", "Upsell"}), i),
			"estimatedvalue": Money(float64(1000 + rnd.IntN(500000))), "closeprobability": int64(rnd.IntN(101)),
			"estimatedclosedate": now.AddDate(0, 0, rnd.IntN(180)).Truncate(24 * time.Hour), "ownerid": owner()}
		if len(accounts) > 0 {
			a := Ref{"account", accounts[rnd.IntN(len(accounts))]}
			attrs["customerid"], attrs["parentaccountid"] = a, a
		}
		if len(contacts) > 0 {
			attrs["parentcontactid"] = Ref{"contact", contacts[rnd.IntN(len(contacts))]}
		}
		if _, err := add("opportunity", attrs); err != nil {
			return res, err
		}
	}
	opps := res.IDs["opportunity"]
	if o.Connections > 0 && (len(opps) == 0 || len(contacts) == 0) {
		return res, fmt.Errorf("dataversesim: seed connections: needs opportunities and contacts")
	}
	var roles []Ref
	for id, r := range s.tables["connectionrole"] {
		if c, _ := r["category"].(OptionValue); c == 1000 {
			roles = append(roles, Ref{"connectionrole", id})
		}
	}
	sort.Slice(roles, func(i, j int) bool { return roles[i].ID < roles[j].ID })
	for i := 0; i < o.Connections; i++ {
		id, err := s.createConnection(map[string]any{"record1id": Ref{"opportunity", opps[rnd.IntN(len(opps))]},
			"record2id": Ref{"contact", contacts[rnd.IntN(len(contacts))]}, "record2roleid": roles[rnd.IntN(len(roles))]}, s.opts.UserID, nil)
		if err != nil {
			return res, fmt.Errorf("dataversesim: seed connection: %w", err)
		}
		stamp("connection", id)
		res.IDs["connection"] = append(res.IDs["connection"], id)
	}
	return res, nil
}
