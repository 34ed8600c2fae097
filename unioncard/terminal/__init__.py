"""Terminal side: transaction sessions, transports, journal, hotlist."""
