import Foundation

/// Why the job store could not do what was asked, with a message saying what to do about it.
public enum JobStoreError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// The database was written by a newer Kinema whose schema this build does not know.
    case newerSchema(path: String, found: Int, supported: Int)
    /// A history cursor that this store did not hand out.
    case invalidCursor(String)
    /// A page size outside the allowed range.
    case invalidLimit(Int, allowed: ClosedRange<Int>)
    /// A stored row that cannot be read back as a job.
    case corruptRow(jobID: String, column: String)
    /// The database itself failed (file not writable, disk full, locked too long, server unreachable, ...).
    case database(path: String, message: String)
    /// A `--store` value that is neither a PostgreSQL URL nor usable as one.
    case invalidStoreURL(text: String, reason: String)

    /// The message to show a user or operator.
    public var description: String {
        switch self {
        case let .newerSchema(path, found, supported):
            return "The job database at \(path) has schema version \(found), but this Kinema knows versions up to "
                + "\(supported): upgrade Kinema, or use another data directory."
        case let .invalidCursor(cursor):
            return "The cursor '\(cursor)' is not one this server handed out: start again without a cursor."
        case let .invalidLimit(limit, allowed):
            return "limit must be between \(allowed.lowerBound) and \(allowed.upperBound), not \(limit)."
        case let .corruptRow(jobID, column):
            return "The stored job \(jobID) has an unreadable '\(column)' column: the job database is damaged."
        case let .database(path, message):
            return "The job database at \(path) failed: \(message)"
        case let .invalidStoreURL(text, reason):
            return "The store '\(text)' is not a PostgreSQL URL Kinema can use: \(reason)."
        }
    }

    /// Same as `description`, for Foundation's error reporting.
    public var errorDescription: String? { description }
}
