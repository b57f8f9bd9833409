// Forward declarations of the UCX handle types, so that public transport
// headers do not include UCX headers (only transport/src does).
#pragma once

struct ucp_context;
struct ucp_worker;
struct ucp_ep;
struct ucp_listener;
struct ucp_conn_request;
struct ucp_mem;
struct ucp_rkey;
