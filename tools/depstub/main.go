package main
import (
 _ "go.etcd.io/etcd/client/v3"
 _ "go.etcd.io/etcd/client/v3/concurrency"
 _ "go.etcd.io/etcd/server/v3/embed"
 _ "github.com/dapr/go-sdk/client"
 _ "github.com/jackc/pgx/v5"
 _ "github.com/spf13/cobra"
 _ "gopkg.in/yaml.v3"
 _ "go.uber.org/zap"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "github.com/cenkalti/backoff/v4"
 _ "github.com/cloudevents/sdk-go/v2"
)
func main(){}
