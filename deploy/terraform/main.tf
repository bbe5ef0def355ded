# dbpilot nodes on an IaaS (OpenStack here; any provider whose instances
# take cloud-init user_data works the same way: swap the resource below).
#
# The control plane renders each node's #cloud-config: agent config, the
# cluster credentials (0600), the agent binary download, the systemd unit.
# Terraform only fetches it and hands it to the machine.

terraform {
  required_version = ">= 1.3"
  required_providers {
    http = {
      source  = "hashicorp/http"
      version = "~> 3.4"
    }
    openstack = {
      source  = "terraform-provider-openstack/openstack"
      version = "~> 2.1"
    }
  }
}

variable "dbpilot_server" {
  description = "Control plane base URL, e.g. https://dbpilot.example.com"
  type        = string
}

variable "dbpilot_token" {
  description = "API token with the admin role in the namespace (user-data holds the cluster credentials)"
  type        = string
  sensitive   = true
}

variable "namespace" {
  type = string
}

variable "cluster" {
  description = "Cluster name or id (create it first: dbpilot cluster create …)"
  type        = string
}

variable "nodes" {
  description = "Node names of the cluster to create machines for"
  type        = list(string)
  default     = ["node1", "node2", "node3"]
}

variable "image_name" {
  description = "A Debian 12 cloud image (the postgres-15 template installs postgresql-15 from Debian)"
  type        = string
  default     = "debian-12-genericcloud-amd64"
}

variable "flavor_name" {
  description = "Match the cluster plan (small: 1 vCPU, 1 GB RAM, 10 GB disk)"
  type        = string
  default     = "m1.small"
}

variable "network_name" {
  type = string
}

# One rendered user-data document per node.
data "http" "user_data" {
  for_each = toset(var.nodes)
  url      = "${var.dbpilot_server}/v1/namespaces/${var.namespace}/clusters/${var.cluster}/nodes/${each.key}/cloud-init?format=raw"
  request_headers = {
    Authorization = "Bearer ${var.dbpilot_token}"
  }
  lifecycle {
    postcondition {
      condition     = self.status_code == 200 && startswith(self.response_body, "#cloud-config")
      error_message = "dbpilot did not render user-data (status ${self.status_code})"
    }
  }
}

resource "openstack_compute_instance_v2" "node" {
  for_each    = toset(var.nodes)
  name        = "${var.cluster}-${each.key}"
  image_name  = var.image_name
  flavor_name = var.flavor_name
  user_data   = data.http.user_data[each.key].response_body
  network {
    name = var.network_name
  }
  # The user-data carries secrets: do not let a re-render replace machines.
  lifecycle {
    ignore_changes = [user_data]
  }
}

output "addresses" {
  value = { for k, v in openstack_compute_instance_v2.node : k => v.access_ip_v4 }
}
