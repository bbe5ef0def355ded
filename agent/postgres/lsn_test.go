package postgres

import "testing"

func TestLSN(t *testing.T) {
	tests := []struct {
		in      string
		want    LSN
		format  string // expected String(); "" means same as in
		wantErr bool
	}{
		{in: "0/0", want: 0},
		{in: "0/3000060", want: 0x3000060},
		{in: "16/B374D848", want: 0x16_B374D848},
		{in: "16/b374d848", want: 0x16_B374D848, format: "16/B374D848"},
		{in: "FFFFFFFF/FFFFFFFF", want: ^LSN(0)},
		{in: "00000001/00000002", want: 1<<32 | 2, format: "1/2"},
		{in: "", wantErr: true},
		{in: "0", wantErr: true},
		{in: "/0", wantErr: true},
		{in: "0/", wantErr: true},
		{in: "1/2/3", wantErr: true},
		{in: "123456789/0", wantErr: true},
		{in: "0/G", wantErr: true},
		{in: "+1/0", wantErr: true},
		{in: " 0/0", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseLSN(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseLSN(%q) = %v, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v", tt.in, uint64(got), err, uint64(tt.want))
			continue
		}
		want := tt.format
		if want == "" {
			want = tt.in
		}
		if s := got.String(); s != want {
			t.Errorf("LSN(%#x).String() = %q, want %q", uint64(got), s, want)
		}
		var u LSN
		b, _ := got.MarshalText()
		if err := u.UnmarshalText(b); err != nil || u != got {
			t.Errorf("text round trip of %v: got %v, %v", got, u, err)
		}
	}
}

func TestStatusLSN(t *testing.T) {
	tests := []struct {
		name string
		st   Status
		want LSN
	}{
		{"not accepting", Status{Running: true, WriteLSN: 5}, 0},
		{"primary", Status{Accepting: true, WriteLSN: 10, ReceiveLSN: 20}, 10},
		{"replica receive ahead", Status{Accepting: true, InRecovery: true, ReceiveLSN: 30, ReplayLSN: 20}, 30},
		{"replica replay ahead", Status{Accepting: true, InRecovery: true, ReceiveLSN: 0, ReplayLSN: 20}, 20},
	}
	for _, tt := range tests {
		if got := tt.st.LSN(); got != tt.want {
			t.Errorf("%s: LSN() = %v, want %v", tt.name, got, tt.want)
		}
	}
}
