package proto

import "time"

// NameRequest is the body of POST /v1/namespaces and POST
// …/{ns}/projects (OpenAPI schema NameRequest).
type NameRequest struct {
	// Name is the new namespace's or project's name (1-40 of a-z, 0-9 and
	// '-').
	Name string `json:"name"`
}

// Namespace is a tenant (OpenAPI schema Namespace).
type Namespace struct {
	// Name is the namespace's name.
	Name string `json:"name"`
	// CreatedAt is when it was created.
	CreatedAt time.Time `json:"created_at"`
}

// Project groups clusters inside a namespace (OpenAPI schema Project).
type Project struct {
	// Namespace is the namespace the project belongs to.
	Namespace string `json:"namespace"`
	// Name is the project's name, unique in the namespace.
	Name string `json:"name"`
	// CreatedAt is when it was created.
	CreatedAt time.Time `json:"created_at"`
}

// Grant gives a token a role in a namespace (OpenAPI schema Grant).
type Grant struct {
	// Namespace is a namespace name, or "*" for every namespace (admin on
	// "*" is the platform administrator: namespaces, all tokens, the
	// fleet).
	Namespace string `json:"namespace"`
	// Role is "viewer" (reads), "operator" (also changes clusters, runs
	// backups and restores) or "admin" (also projects, templates, tokens,
	// the audit log); each includes the ones before it.
	Role string `json:"role"`
}

// WhoAmI is the answer of GET /v1/whoami: the calling token.
type WhoAmI struct {
	// Grants are the token's roles.
	Grants []Grant `json:"grants"`
	// Name is the token's name.
	Name string `json:"name"`
	// TokenID is the token's id ("tok-…").
	TokenID string `json:"token_id"`
}

// TokenCreate is the body of POST /v1/tokens (OpenAPI schema TokenCreate).
// The caller must be admin of every namespace it grants (platform admin
// for "*"). The answer is 201 with a [Token] carrying the secret.
type TokenCreate struct {
	// Grants are the roles to give, at least one.
	Grants []Grant `json:"grants"`
	// Name describes the token, 1 to 100 characters. Required.
	Name string `json:"name"`
}

// Token is an API bearer token (OpenAPI schema Token).
type Token struct {
	// ID identifies the token ("tok-…"); DELETE /v1/tokens/{id} revokes it.
	ID string `json:"id"`
	// Name describes the token.
	Name string `json:"name"`
	// Grants are the token's roles.
	Grants []Grant `json:"grants"`
	// CreatedBy is the id of the token that created it ("server" for the
	// admin token the server bootstraps).
	CreatedBy string `json:"created_by"`
	// CreatedAt is when it was issued.
	CreatedAt time.Time `json:"created_at"`
	// RevokedAt is when it was revoked; omitted while it is valid.
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Secret is the bearer token itself ("dbp_…"), only in the creation
	// answer: the server keeps its SHA-256 alone.
	Secret string `json:"token,omitempty"`
}
