import Foundation
import Hummingbird
import NIOCore

/// Output and upload files with ETag (304 on If-None-Match) and single byte ranges (206, or 416 when
/// the range lies outside the file).
enum FileResponse {
    static func make(_ url: URL, contentType: String, request: Request, cacheControl: String = "private, max-age=3600") throws -> Response {
        let attributes = try FileManager.default.attributesOfItem(atPath: url.path)
        let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        let etag = "\"\(String(size, radix: 16))-\(String(Int(modified * 1000), radix: 16))\""
        var headers: HTTPFields = [.contentType: contentType, .eTag: etag, .acceptRanges: "bytes", .cacheControl: cacheControl]
        if let match = request.headers[.ifNoneMatch], match.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces) == etag || $0 == "*" }) {
            return Response(status: .notModified, headers: headers)
        }
        let data = try Data(contentsOf: url)
        guard let rangeHeader = request.headers[.range], request.method == .get else {
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(data: data)))
        }
        guard let range = byteRange(rangeHeader, size: data.count) else {
            headers[.contentRange] = "bytes */\(data.count)"
            var error = APIError(.rangeNotSatisfiable, "range_not_satisfiable", "the range \(rangeHeader) lies outside the \(data.count)-byte file")
            error.headers = headers
            error.headers[.contentType] = nil
            throw error
        }
        headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(data.count)"
        return Response(status: .partialContent, headers: headers,
                        body: ResponseBody(byteBuffer: ByteBuffer(data: data.subdata(in: range))))
    }

    /// The one range of a `bytes=` header, clamped to the file; nil when unsatisfiable. Several ranges are
    /// answered with the first.
    static func byteRange(_ header: String, size: Int) -> Range<Int>? {
        guard header.hasPrefix("bytes="), size > 0 else { return nil }
        let first = header.dropFirst("bytes=".count).split(separator: ",").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        let parts = first.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 else { return nil }
        if parts[0].isEmpty {
            guard let suffix = Int(parts[1]), suffix > 0 else { return nil }
            return max(0, size - suffix)..<size
        }
        guard let start = Int(parts[0]), start >= 0, start < size else { return nil }
        if parts[1].isEmpty { return start..<size }
        guard let end = Int(parts[1]), end >= start else { return nil }
        return start..<(end >= size - 1 ? size : end + 1)
    }
}
