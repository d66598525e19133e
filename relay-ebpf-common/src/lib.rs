//! Types shared between the XDP admission program (`relay-ebpf`) and relay's user-space loader.
#![no_std]
